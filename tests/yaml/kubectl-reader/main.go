// kubectl-reader reads a manifest file exactly as `kubectl apply -f FILE` (and `kubectl create -f`)
// do, by calling the same library code kubectl v1.35.4 calls, and prints the objects kubectl would
// send to the API server.
//
//	kubectl-reader [--pretty] [--partial] [--validate=strict|ignore] FILE
//	    JSON array of the objects, in order, one a line
//	kubectl-reader --raw FILE
//	    JSON array of the per-document JSON that the YAML-or-JSON decoder produced (diagnostic)
//
// FILE may be "-" for standard input. On success it exits 0. When kubectl would report an error
// (it cannot read a document, a document is not an object, no object at all) it prints the error
// on stderr the way kubectl does ("error: ..."), and exits 1. With --partial it also prints, on
// stdout, the objects kubectl would still have sent before reporting the error (kubectl apply and
// create do send the objects they could read).
//
// The pipeline (k8s.io/kubectl/pkg/cmd/apply ApplyOptions.GetObjects, cli-runtime v0.35.4):
//
//	resource.Builder.Unstructured().Schema(validator).ContinueOnError().
//	    NamespaceParam(ns).DefaultNamespace().FilenameParam(...).LabelSelectorParam(...).
//	    Flatten().Do().Infos()
//	  FileVisitor: transform.NewReader(f, unicode.BOMOverride(unicode.UTF8.NewDecoder()))
//	  StreamVisitor: apimachinery util/yaml.NewYAMLOrJSONDecoder(r, 4096).Decode(&RawExtension)
//	    (YAML: YAMLReader splits on "---" lines, then sigs.k8s.io/yaml.Unmarshal, i.e. YAMLToJSON
//	    with go.yaml.in/yaml/v2, YAML 1.1), bytes.TrimSpace, empty and "null" documents skipped,
//	    ValidateSchema(raw, validator) (kubectl/pkg/validation ParamVerifyingSchema)
//	  mapper.infoForData: metadataValidatingDecoder{unstructured.UnstructuredJSONScheme}
//	  FlattenListVisitor: anything decoded as a list (a top-level "items") is flattened
//	and each object is sent as runtime.Encode(unstructured.UnstructuredJSONScheme, info.Object)
//	(apply.go: server-side apply body, and the body helper.Create encodes for client-side apply).
//
// Not reproduced is what needs a cluster: the RESTMapper (so no namespace defaulting of namespaced
// kinds), the server-side field validation, and the last-applied-configuration annotation of
// client-side apply.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/resource"
	"k8s.io/kubectl/pkg/validation"
)

func main() {
	raw := flag.Bool("raw", false, "print the JSON of each document as the YAML-or-JSON decoder produced it")
	pretty := flag.Bool("pretty", false, "indent the output")
	partial := flag.Bool("partial", false, "on error, still print the objects kubectl would send")
	validate := flag.String("validate", "strict", "kubectl's --validate: strict (the default, also true) or ignore (also false)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: kubectl-reader [--raw] [--pretty] [--partial] [--validate=strict|ignore] FILE|-")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(64)
	}
	path := flag.Arg(0)

	var validator resource.ContentValidator
	switch *validate {
	case "strict", "true":
		// f.Validator(metav1.FieldValidationStrict) in kubectl's cmdutil factory, with a server that
		// supports server-side field validation (every API server since v1.27): the schema itself is
		// then left to the server, but the ParamVerifyingSchema still parses each document and
		// requires apiVersion and kind strings before asking the server about them.
		validator = validation.NewParamVerifyingSchema(validation.NullSchema{}, serverSideFieldValidation{}, metav1.FieldValidationStrict)
	case "ignore", "false":
		validator = validation.NullSchema{} // f.Validator(metav1.FieldValidationIgnore)
	default:
		fmt.Fprintf(os.Stderr, "kubectl-reader: --validate must be strict or ignore, not %q\n", *validate)
		os.Exit(64)
	}

	var docs [][]byte
	var err error
	if *raw {
		docs, err = rawDocuments(path)
	} else {
		docs, err = objects(path, validator)
	}
	if err == nil || *partial {
		writeArray(os.Stdout, docs, *pretty)
	}
	if err != nil {
		fmt.Fprint(os.Stderr, kubectlErrorMessage(err))
		os.Exit(1)
	}
}

// objects runs kubectl apply's resource builder over the file, then encodes each object as
// kubectl does for the request body.
func objects(path string, validator resource.ContentValidator) ([][]byte, error) {
	// kubectl apply: o.Builder.Unstructured().Schema(o.Validator).ContinueOnError().
	//   NamespaceParam(o.Namespace).DefaultNamespace().FilenameParam(o.EnforceNamespace, ...).
	//   LabelSelectorParam(o.Selector).Flatten().Do(); o.objects, err = r.Infos()
	infos, err := resource.NewLocalBuilder().
		Unstructured().
		Schema(validator).
		ContinueOnError().
		NamespaceParam("default").DefaultNamespace().
		FilenameParam(false, &resource.FilenameOptions{Filenames: []string{path}}).
		LabelSelectorParam("").
		Flatten().
		Do().
		Infos()
	var out [][]byte
	for _, info := range infos {
		data, encErr := runtime.Encode(unstructured.UnstructuredJSONScheme, info.Object)
		if encErr != nil {
			err = utilerrors.NewAggregate([]error{err, encErr})
			continue
		}
		out = append(out, bytes.TrimRight(data, "\n"))
	}
	// kubectl apply: if len(infos) == 0 && len(errs) == 0 { return fmt.Errorf("no objects passed to apply") }
	if len(infos) == 0 && err == nil {
		err = errors.New("no objects passed to apply")
	}
	return out, err
}

// serverSideFieldValidation is the answer of an API server that supports the fieldValidation query
// parameter (resource.QueryParamVerifierV3 against any v1.27+ server).
type serverSideFieldValidation struct{}

func (serverSideFieldValidation) HasSupport(schema.GroupVersionKind) error { return nil }

// rawDocuments is StreamVisitor.Visit's decoding loop (cli-runtime pkg/resource/visitor.go) up to
// the point where the JSON of a document is handed to the object decoder.
func rawDocuments(path string) ([][]byte, error) {
	var f io.Reader = os.Stdin
	if path != "-" {
		file, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer file.Close()
		f = file
	}
	r := transform.NewReader(f, unicode.BOMOverride(unicode.UTF8.NewDecoder()))
	d := yaml.NewYAMLOrJSONDecoder(r, 4096)
	var out [][]byte
	for {
		ext := runtime.RawExtension{}
		if err := d.Decode(&ext); err != nil {
			if err == io.EOF {
				return out, nil
			}
			return out, fmt.Errorf("error parsing %s: %v", path, err)
		}
		ext.Raw = bytes.TrimSpace(ext.Raw)
		if len(ext.Raw) == 0 || bytes.Equal(ext.Raw, []byte("null")) {
			continue
		}
		// A JSON document is kept as written; compact it to one line (number literals unchanged).
		var compact bytes.Buffer
		if err := json.Compact(&compact, ext.Raw); err == nil {
			ext.Raw = compact.Bytes()
		}
		out = append(out, ext.Raw)
	}
}

// writeArray prints the documents as one JSON array, one element a line, without re-encoding
// them: the number literals are kubectl's own.
func writeArray(w io.Writer, docs [][]byte, pretty bool) {
	var buf bytes.Buffer
	buf.WriteString("[")
	for i, d := range docs {
		if i > 0 {
			buf.WriteString(",")
		}
		buf.WriteString("\n")
		if pretty {
			var ind bytes.Buffer
			if json.Indent(&ind, d, "  ", "  ") == nil {
				d = ind.Bytes()
			}
			buf.WriteString("  ")
		}
		buf.Write(d)
	}
	if len(docs) > 0 {
		buf.WriteString("\n")
	}
	buf.WriteString("]\n")
	w.Write(buf.Bytes())
}

// kubectlErrorMessage formats an error as kubectl's cmdutil.CheckErr does for errors that are not
// API status errors: an aggregate of one is unwrapped, an aggregate prints one error a line, and
// any other error is prefixed with "error: ".
func kubectlErrorMessage(err error) string {
	if agg, ok := err.(utilerrors.Aggregate); ok && len(agg.Errors()) == 1 {
		err = agg.Errors()[0]
	}
	if agg, ok := err.(utilerrors.Aggregate); ok {
		var b strings.Builder
		for _, e := range agg.Errors() {
			fmt.Fprintf(&b, "%v\n", e)
		}
		return b.String()
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "error: ") {
		msg = "error: " + msg
	}
	return msg + "\n"
}
