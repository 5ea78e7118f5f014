package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the paths of the files kube-apiserver is started with.
type pki struct {
	caPEM     []byte
	caCert    string // ca.crt
	servCert  string // apiserver.crt
	servKey   string // apiserver.key
	saKey     string // sa.key (service-account token signing key)
	saPub     string // sa.pub
	tokenFile string // tokens.csv

	ca    *x509.Certificate // signs client certificates (issueClient)
	caKey *ecdsa.PrivateKey
}

// Users with a static token (see writeTokens).
const (
	UserAdmin  = "admin"  // group system:masters
	UserTracer = "tracer" // bound to skbtrail-tracer and skbtrail-tracer-proxy
	UserNobody = "nobody" // authenticated, no RBAC at all
	// UserDaemon is not a static user: its kubeconfig carries a token of the
	// ServiceAccount skbtrail/skbtrail (TokenRequest API).
	UserDaemon = "daemon"
)

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func writePEM(path, typ string, der []byte) error {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("cluster: write %s: %w", path, err)
	}
	return nil
}

func writeKey(path string, k *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return fmt.Errorf("cluster: marshal key: %w", err)
	}
	return writePEM(path, "EC PRIVATE KEY", der)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// makePKI writes a CA, the API server's serving certificate (signed by the
// CA), the service-account signing key pair and the static token file into
// dir.
func makePKI(dir string, tokens map[string]string) (*pki, error) {
	p := &pki{
		caCert: filepath.Join(dir, "ca.crt"), servCert: filepath.Join(dir, "apiserver.crt"),
		servKey: filepath.Join(dir, "apiserver.key"), saKey: filepath.Join(dir, "sa.key"),
		saPub: filepath.Join(dir, "sa.pub"), tokenFile: filepath.Join(dir, "tokens.csv"),
	}
	caKey, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("cluster: CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "skbtrail-test-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("cluster: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("cluster: parse CA certificate: %w", err)
	}
	p.ca, p.caKey = ca, caKey
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := writePEM(p.caCert, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	if err := p.writeServing(ca, caKey, now); err != nil {
		return nil, err
	}
	if err := p.writeSAKeys(); err != nil {
		return nil, err
	}
	return p, writeTokens(p.tokenFile, tokens)
}

func (p *pki) writeServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time) error {
	key, err := newKey()
	if err != nil {
		return fmt.Errorf("cluster: serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(APIServerIP), net.ParseIP("127.0.0.1"), net.ParseIP(KubernetesServiceIP)},
		DNSNames:    []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("cluster: serving certificate: %w", err)
	}
	if err := writePEM(p.servCert, "CERTIFICATE", der); err != nil {
		return err
	}
	return writeKey(p.servKey, key)
}

// issueClient writes a client certificate signed by the CA for user cn in
// groups orgs (X.509 authentication: CN = user, O = groups) to
// <base>.crt and its key to <base>.key, and returns both paths.
func (p *pki) issueClient(base, cn string, orgs ...string) (certPath, keyPath string, err error) {
	key, err := newKey()
	if err != nil {
		return "", "", fmt.Errorf("cluster: client key for %s: %w", cn, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		return "", "", fmt.Errorf("cluster: client certificate for %s: %w", cn, err)
	}
	certPath, keyPath = base+".crt", base+".key"
	if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	return certPath, keyPath, writeKey(keyPath, key)
}

func (p *pki) writeSAKeys() error {
	key, err := newKey()
	if err != nil {
		return fmt.Errorf("cluster: service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("cluster: service-account public key: %w", err)
	}
	if err := writeKey(p.saKey, key); err != nil {
		return err
	}
	return writePEM(p.saPub, "PUBLIC KEY", pub)
}

// randomToken returns 32 random hex digits.
func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return hex.EncodeToString(b[:])
}

// writeTokens writes kube-apiserver's --token-auth-file:
// token,user,uid,"group,...".
func writeTokens(path string, tokens map[string]string) error {
	var data []byte
	for _, u := range []string{UserAdmin, UserTracer, UserNobody} {
		line := fmt.Sprintf("%s,%s,uid-%s", tokens[u], u, u)
		if u == UserAdmin {
			line += `,"system:masters"`
		}
		data = append(data, line+"\n"...)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("cluster: write token file: %w", err)
	}
	return nil
}
