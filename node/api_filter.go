package node

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/hashicorp/go-bexpr"
)

// Bounds on ?filter= expressions, checked before the parser sees them: the
// parser is a recursive PEG, so its cost grows with length and nesting.
// Consul's own filters are a few dozen bytes.
const (
	maxFilterLen   = 4 << 10
	maxFilterDepth = 32
	// maxFilterSteps bounds the parser's work on an expression that passed
	// the two checks above; it counts grammar steps, not terms.
	maxFilterSteps = 1 << 20
)

// filter is a parsed ?filter= expression (Consul's filter language,
// go-bexpr). A nil *filter matches everything.
type filter struct {
	ev *bexpr.Evaluator
}

// parseFilter reads ?filter= and checks it against sample, a value of the
// type the endpoint filters, so that an unknown selector is refused now
// rather than when the first element is read. It answers 400 itself and
// returns false when the expression is unusable.
func parseFilter(w http.ResponseWriter, r *http.Request, sample any) (*filter, bool) {
	expr := r.URL.Query().Get("filter")
	if expr == "" {
		return nil, true
	}
	f, err := newFilter(expr, sample)
	if err != nil {
		writeError(w, http.StatusBadRequest, "Failed to create boolean expression evaluator: %v", err)
		return nil, false
	}
	return f, true
}

// newFilter parses expr and evaluates it once against sample.
func newFilter(expr string, sample any) (*filter, error) {
	if len(expr) > maxFilterLen {
		return nil, fmt.Errorf("filter is %d bytes, over the limit of %d", len(expr), maxFilterLen)
	}
	if d := nesting(expr); d > maxFilterDepth {
		return nil, fmt.Errorf("filter nests %d deep, over the limit of %d", d, maxFilterDepth)
	}
	ev, err := bexpr.CreateEvaluator(expr, bexpr.WithMaxExpressions(maxFilterSteps))
	if err != nil {
		return nil, err
	}
	if _, err := ev.Evaluate(sample); err != nil {
		return nil, err
	}
	return &filter{ev: ev}, nil
}

// nesting returns the deepest nesting of parentheses and collection braces
// in expr outside quoted strings, or the number of "not"s if larger: each one is a recursion of
// the parser too.
func nesting(expr string) int {
	depth, deepest := 0, 0
	var quote byte
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '`':
			quote = c
		case c == '(' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ')' || c == '}':
			depth--
		}
	}
	nots := 0
	for _, f := range strings.Fields(expr) {
		if f == "not" {
			nots++
		}
	}
	return max(deepest, nots)
}

// match reports whether v passes the filter. An evaluation error (a type
// that differs from the sample's) does not match.
func (f *filter) match(v any) bool {
	if f == nil {
		return true
	}
	ok, err := f.ev.Evaluate(v)
	return err == nil && ok
}

// filterSlice returns the elements of in that pass f, in order.
func filterSlice[T any](f *filter, in []T) []T {
	if f == nil {
		return in
	}
	out := make([]T, 0, len(in))
	for _, v := range in {
		if f.match(v) {
			out = append(out, v)
		}
	}
	return out
}

// filterMap removes the values of m that do not pass f.
func filterMap[T any](f *filter, m map[string]T) map[string]T {
	if f == nil {
		return m
	}
	for _, k := range slices.Collect(maps.Keys(m)) {
		if !f.match(m[k]) {
			delete(m, k)
		}
	}
	return m
}
