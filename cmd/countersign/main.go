// Command countersign is an MCP server that lets AI agents act at machine
// speed while a verified human countersigns every high-risk action.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:]))
}
