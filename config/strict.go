package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// ErrNotObject refuses a document that is not a JSON object.
var ErrNotObject = errors.New("the configuration must be a JSON object")

// DecodeValue turns a generic JSON document (as a json.Decoder with
// UseNumber produces it) into a configuration, strictly: the document
// must be an object (else ErrNotObject); every key must be one of the
// configuration's (exact spelling) and every value of the right type,
// else an *Invalid names each offending key ("xmpp[1].secrett: unknown
// key", "ports.min: must be an integer, got \"x\""). Missing keys take
// their defaults (FillDefaults included). The result is not validated.
// Unlike ParseAt, which stops at the first problem, every key is checked:
// the provisioning API answers with them all.
func DecodeValue(v any) (Config, error) {
	if _, ok := v.(map[string]any); !ok {
		return Config{}, ErrNotObject
	}
	var problems fieldErrors
	checkValue(v, reflect.TypeFor[Config](), "", &problems)
	if err := problems.err(); err != nil {
		return Config{}, err
	}
	// Decode what was checked (duplicate keys already resolved, last
	// wins).
	data, err := json.Marshal(v)
	if err != nil {
		return Config{}, err
	}
	return decodeOverDefaults(data)
}

// checkValue walks a generic JSON value against the Go type it will be
// decoded into and records unknown keys and type mismatches with their
// full path. null is accepted anywhere (the default stays).
func checkValue(v any, t reflect.Type, path string, out *fieldErrors) {
	if v == nil {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	bad := func(msg string) { out.add(path, msg) }
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			bad("must be an object, got " + jsonKind(v))
			return
		}
		known := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			ft, ok := known[k]
			if !ok {
				out.add(joinKey(path, k), "unknown key")
				continue
			}
			checkValue(m[k], ft, joinKey(path, k), out)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok || t.Key().Kind() != reflect.String {
			bad("must be an object, got " + jsonKind(v))
			return
		}
		for k, e := range m {
			checkValue(e, t.Elem(), joinKey(path, k), out)
		}
	case reflect.Slice, reflect.Array:
		a, ok := v.([]any)
		if !ok {
			bad("must be an array, got " + jsonKind(v))
			return
		}
		for i, e := range a {
			checkValue(e, t.Elem(), path+"["+strconv.Itoa(i)+"]", out)
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			bad("must be a string, got " + jsonKind(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			bad("must be true or false, got " + jsonKind(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			bad("must be an integer, got " + jsonKind(v))
			return
		}
		if _, err := strconv.ParseInt(n.String(), 10, t.Bits()); err != nil {
			bad(numberProblem(n, err))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			bad("must be a non-negative integer, got " + jsonKind(v))
			return
		}
		if _, err := strconv.ParseUint(n.String(), 10, t.Bits()); err != nil {
			bad(numberProblem(n, err))
		}
	case reflect.Float32, reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			bad("must be a number, got " + jsonKind(v))
			return
		}
		if _, err := strconv.ParseFloat(n.String(), t.Bits()); err != nil {
			bad(fmt.Sprintf("%s is out of range", n))
		}
	}
}

func numberProblem(n json.Number, err error) string {
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Sprintf("%s is out of range", n)
	}
	return fmt.Sprintf("must be an integer, got %s", n)
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func jsonKind(v any) string {
	switch v := v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return strconv.Quote(truncate(v, 40))
	case bool:
		return strconv.FormatBool(v)
	case json.Number:
		return v.String()
	}
	return fmt.Sprintf("%T", v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// jsonFields maps the JSON names of t's fields (as encoding/json names
// them, embedded structs flattened) to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					if _, dup := out[k]; !dup {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
