//go:build tools

// The module that ships the official SARIF 2.1.0 schema (sarif.go's `schema`); validate.sh reads
// it from the module cache, so it is pinned here.
package main

import _ "github.com/owenrumney/go-sarif/v3/pkg/report/v210/sarif"
