// sarif-validator checks SARIF files against the official SARIF 2.1.0 JSON schema (draft-04),
// the schema OASIS publishes, as the go-sarif module ships it.
//
//	sarif-validator SCHEMA.json FILE.sarif...
//
// Exit 0 when every file validates; 1 with each error on stderr otherwise.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/xeipuuv/gojsonschema"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: sarif-validator SCHEMA.json FILE.sarif...")
		os.Exit(2)
	}
	schemaPath, err := filepath.Abs(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	schema, err := gojsonschema.NewSchema(gojsonschema.NewReferenceLoader("file://" + schemaPath))
	if err != nil {
		fmt.Fprintf(os.Stderr, "schema %s: %v\n", schemaPath, err)
		os.Exit(2)
	}
	failed := false
	for _, f := range os.Args[2:] {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		result, err := schema.Validate(gojsonschema.NewBytesLoader(data))
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			failed = true
			continue
		}
		if !result.Valid() {
			failed = true
			for _, e := range result.Errors() {
				fmt.Fprintf(os.Stderr, "%s: %s\n", f, e)
			}
			continue
		}
		fmt.Printf("%s: valid SARIF 2.1.0\n", f)
	}
	if failed {
		os.Exit(1)
	}
}
