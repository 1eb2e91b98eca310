package config

import (
	"fmt"
	"strings"
)

// FieldError is one problem with one key of the document. Field uses the
// document's own notation ("ports.min", "xmpp[0].secret"); it is empty for
// a problem of the document as a whole.
type FieldError struct {
	Field   string
	Message string
}

func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Invalid is the error of a document with problems in its keys: what
// Validate returns, and DecodeValue for unknown keys and wrong types.
// Its text is one "field: message" line per problem.
type Invalid struct {
	Fields []FieldError
}

func (e *Invalid) Error() string {
	lines := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		lines[i] = f.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap gives each problem as an error of its own (errors.Is and As see
// them all).
func (e *Invalid) Unwrap() []error {
	out := make([]error, len(e.Fields))
	for i, f := range e.Fields {
		out[i] = f
	}
	return out
}

// fieldErrors collects problems; err returns nil when there is none.
type fieldErrors []FieldError

func (f *fieldErrors) add(field, message string) {
	*f = append(*f, FieldError{Field: field, Message: message})
}

func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	return &Invalid{Fields: f}
}

func (f *fieldErrors) addf(field, format string, args ...any) {
	f.add(field, fmt.Sprintf(format, args...))
}
