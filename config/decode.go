package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
)

// Load reads and validates the configuration file at path.
func Load(path string) (Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	cfg, err := ParseAt(f, abs)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// maxDocument bounds what Parse reads: a config is a few kilobytes.
const maxDocument = 1 << 20

// Parse decodes a configuration document over the defaults and validates
// it. The document is not from a file, so it may name no files (see
// ParseAt).
func Parse(r io.Reader) (Config, error) { return ParseAt(r, "") }

// ParseAt is Parse for the document of the configuration file at path
// (absolute): the files it names are read from path's directory. It stops
// at the first decoding problem (naming its key or line); validation
// problems are all reported, as an *Invalid.
func ParseAt(r io.Reader, path string) (Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxDocument+1))
	if err != nil {
		return Config{}, fmt.Errorf("read: %w", err)
	}
	if len(data) > maxDocument {
		return Config{}, fmt.Errorf("document larger than %d bytes", maxDocument)
	}
	cfg, err := decodeOverDefaults(data)
	if err != nil {
		return Config{}, describeJSONError(data, err)
	}
	cfg.Path = path
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// errTrailingData is a document followed by more than white space.
var errTrailingData = errors.New("unexpected data after the JSON document")

// decodeOverDefaults is the one decoding of a document into the schema:
// over Default, unknown keys refused, then FillDefaults. It is not
// validated.
func decodeOverDefaults(data []byte) (Config, error) {
	cfg := Default()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, err
	}
	if dec.More() {
		return Config{}, errTrailingData
	}
	cfg.FillDefaults()
	return cfg, nil
}

// describeJSONError turns decoder errors into messages naming the key or
// the line, so an operator can find the mistake.
func describeJSONError(data []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, errTrailingData):
		return err
	case errors.As(err, &syn):
		return fmt.Errorf("line %d: invalid JSON: %v", lineOf(data, syn.Offset), err)
	case errors.As(err, &typ):
		return fmt.Errorf("%s: must be %s, got JSON %s", typ.Field, goTypeName(typ.Type), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown key %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	case errors.Is(err, io.EOF):
		return errors.New("empty document")
	}
	return fmt.Errorf("invalid JSON: %w", err)
}

// goTypeName names the type a value must have: a vocabulary (ServiceType,
// Policy...) is named by its kind, "string", as the document sees it.
func goTypeName(t reflect.Type) string {
	k := t.Kind()
	if basic := k >= reflect.Bool && k <= reflect.Complex128 || k == reflect.String; basic && t.PkgPath() != "" {
		return k.String()
	}
	return t.String()
}

func lineOf(data []byte, offset int64) int {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	return bytes.Count(data[:offset], []byte("\n")) + 1
}
