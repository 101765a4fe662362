package argschema

import "testing"

// Measure reports nesting and about the JSON size, and stops early once a
// limit is passed, so a huge or deep value is cheap to refuse.
func TestMeasureReportsDepthAndSize(t *testing.T) {
	deep := any("x")
	for range 100 {
		deep = []any{deep}
	}
	for _, tc := range []struct {
		name       string
		v          any
		depth      int
		moreThan   int
		atMostSize int
	}{
		{"flat", map[string]any{"a": "bcd", "n": 1.0}, 1, 10, 30},
		{"deep stops past the limit", deep, 33, 0, 100},
	} {
		d, n := Measure(tc.v, 32, 1<<10)
		if d != tc.depth || n <= tc.moreThan || n > tc.atMostSize {
			t.Errorf("%s: depth %d size %d, want depth %d and size in (%d, %d]", tc.name, d, n, tc.depth, tc.moreThan, tc.atMostSize)
		}
	}
	if _, n := Measure(map[string]any{"big": string(make([]byte, 5000))}, 32, 1<<10); n <= 1<<10 {
		t.Errorf("a value over the byte limit measures %d", n)
	}
}
