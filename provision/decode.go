package provision

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/jnrelay/jnrelay/config"
)

// parseJSON reads one JSON document into generic values (numbers kept as
// json.Number, so integers are checked exactly). Anything after the
// document is an error.
func parseJSON(data []byte) (any, *Error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, jsonError(data, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, newError(http.StatusBadRequest, CodeInvalidJSON, "unexpected data after the JSON document")
	}
	return v, nil
}

func jsonError(data []byte, err error) *Error {
	var syn *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		return newError(http.StatusBadRequest, CodeInvalidJSON, "empty body: a JSON document is required")
	case errors.As(err, &syn):
		off := min(max(syn.Offset, 0), int64(len(data)))
		line := bytes.Count(data[:off], []byte("\n")) + 1
		return newError(http.StatusBadRequest, CodeInvalidJSON, fmt.Sprintf("line %d: %v", line, syn))
	}
	return newError(http.StatusBadRequest, CodeInvalidJSON, err.Error())
}

// decodeConfig turns a generic JSON document into a configuration,
// strictly (config.DecodeValue): a 400 names each unknown key or value of
// the wrong type ("xmpp[1].secrett: unknown key"). Missing keys take their
// defaults. The result is not validated.
func decodeConfig(v any) (config.Config, *Error) {
	cfg, err := config.DecodeValue(v)
	if err != nil {
		return config.Config{}, configError(err)
	}
	return cfg, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
