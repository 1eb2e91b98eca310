package provision

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/jnrelay/jnrelay/config"
)

// mergePatch applies an RFC 7386 JSON merge patch to target and returns
// the result: an object patch merges member by member (null deletes a
// member, objects merge recursively), anything else replaces the target
// whole (arrays included). target is modified where it is an object.
// Recursion is bounded by the depth of the patch, which the JSON decoder
// and the body limit bound.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, pv := range p {
		if pv == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], pv)
	}
	return t
}

// configValue is cfg as a generic JSON value, the target of a patch.
func configValue(cfg config.Config) (any, error) {
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	err = dec.Decode(&v)
	return v, err
}

// patchConfig applies a merge patch (raw body) to current and decodes the
// result strictly, as a PUT of the whole document would be. The result is
// neither unredacted nor validated.
func patchConfig(current config.Config, patch []byte) (config.Config, *Error) {
	p, perr := parseJSON(patch)
	if perr != nil {
		return config.Config{}, perr
	}
	target, err := configValue(current)
	if err != nil {
		return config.Config{}, newError(http.StatusInternalServerError, CodeInternal, "encode current configuration: "+err.Error())
	}
	return decodeConfig(mergePatch(target, p))
}

// documentConfig decodes a whole document (raw body) strictly.
func documentConfig(doc []byte) (config.Config, *Error) {
	v, perr := parseJSON(doc)
	if perr != nil {
		return config.Config{}, perr
	}
	return decodeConfig(v)
}
