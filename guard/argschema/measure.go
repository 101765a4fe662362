package argschema

// Measure walks a decoded JSON value once and returns its nesting depth
// and about how many bytes its JSON takes (strings and keys by their
// length), stopping early once either limit is passed, so that a huge or
// deep value costs little to refuse.
func Measure(v any, maxDepth, maxBytes int) (depth, size int) {
	var walk func(v any, d int) int
	walk = func(v any, d int) int {
		if d > maxDepth || size > maxBytes {
			return d
		}
		deepest := d
		switch v := v.(type) {
		case map[string]any:
			size += 2
			for k, x := range v {
				size += len(k) + 4
				deepest = max(deepest, walk(x, d+1))
				if deepest > maxDepth || size > maxBytes {
					break
				}
			}
		case []any:
			size += 2
			for _, x := range v {
				size++
				deepest = max(deepest, walk(x, d+1))
				if deepest > maxDepth || size > maxBytes {
					break
				}
			}
		case string:
			size += len(v) + 2
		default:
			size += 8
		}
		return deepest
	}
	depth = walk(v, 0)
	return depth, size
}
