// Package clusterfuzz holds the fuzz target of pkg/cluster's --to parser
// (cluster.ParseTarget), kept outside that package.
package clusterfuzz
