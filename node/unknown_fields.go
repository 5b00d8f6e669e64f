package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
)

// decodeStrict decodes a registration body into v, refusing any field v's
// type does not have. Consul accepts many fields Shoal has no use for
// (Connect, Proxy, TaggedAddresses, ...); dropping them would register
// something other than what the client asked for, so a field that carries
// a value is refused with 400. A field sent empty (null, "", 0, false, [],
// {}) asks for nothing and passes.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	var raw json.RawMessage
	if !decodeBody(w, r, &raw) {
		return false
	}
	if err := unknownFields(raw, reflect.TypeOf(v), ""); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		writeDecodeError(w, err)
		return false
	}
	return true
}

// unknownFields reports the first field of the JSON value raw that type t
// does not decode and that is not empty. Field names match as
// encoding/json matches them: by JSON name, case-insensitively.
func unknownFields(raw json.RawMessage, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice:
		var elems []json.RawMessage
		if json.Unmarshal(raw, &elems) != nil {
			return nil // a type error: Unmarshal reports it
		}
		for i, e := range elems {
			if err := unknownFields(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		// A map's keys are data; its values are checked like fields.
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return nil
		}
		for _, key := range slices.Sorted(maps.Keys(obj)) {
			if err := unknownFields(obj[key], t.Elem(), fmt.Sprintf("%s[%s]", path, key)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Struct:
	default:
		return nil
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return nil
	}
	for _, key := range slices.Sorted(maps.Keys(obj)) {
		val := obj[key]
		f, ok := fieldByJSONName(t, key)
		name := key
		if path != "" {
			name = path + "." + key
		}
		if !ok {
			if emptyJSON(val) {
				continue
			}
			return fmt.Errorf("shoal: field %s is not supported: Shoal would ignore it, so it refuses the request", name)
		}
		if err := unknownFields(val, f.Type, name); err != nil {
			return err
		}
	}
	return nil
}

// fieldByJSONName finds the exported field of struct type t (or of a struct
// it embeds) that decodes the JSON key.
func fieldByJSONName(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct && f.Tag.Get("json") == "" {
			// An embedded struct's fields decode as the outer one's.
			if inner, ok := fieldByJSONName(f.Type, key); ok {
				return inner, true
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if strings.EqualFold(name, key) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// emptyJSON reports whether a JSON value carries nothing: null, false, 0,
// "", [] or {}.
func emptyJSON(raw json.RawMessage) bool {
	switch string(bytes.TrimSpace(raw)) {
	case "null", "false", "0", `""`, "[]", "{}":
		return true
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	switch x := v.(type) {
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	case float64:
		return x == 0
	}
	return false
}
