package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/config"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

func newAgentsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "Manage the agents allowed on the HTTP listener (bearer tokens); freeze and unfreeze agents",
	}
	cmd.AddCommand(newFreezeCmds()...)
	cmd.AddCommand(&cobra.Command{
		Use:   "add NAME",
		Short: "Create a bearer token for a new agent; print it once, store only its hash",
		Long: `Add creates a random bearer token for the agent NAME and prints it once on
stdout (TOKEN=$(countersign agents add ci-bot --config mcp.yaml) keeps it out of
the terminal). Only its SHA-256 is stored, under http.agents of the
configuration file --config names (or ./mcp.yaml, or $COUNTERSIGN_CONFIG); the
rest of the file, comments included, is kept. With no configuration file
(the embedded default) nothing is stored and the line to add is printed
instead; countersign init writes a file to add it to. agents rotate gives an
agent a new token, agents remove removes it.

The agent sends "Authorization: Bearer TOKEN" to /mcp or /sse. A running
serve picks the new agent up when restarted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !config.ValidID(name) {
				return configError(fmt.Errorf("agent name %q: expected a lower-case id (letters, digits, . _ -)", name))
			}
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			for _, a := range c.HTTP.Agents {
				if a.ID == name {
					return configError(fmt.Errorf("%s: http.agents: agent %q exists already", c.Source, name))
				}
			}
			token, hash, err := newToken()
			if err != nil {
				return err
			}
			stderr := cmd.ErrOrStderr()
			if c.Source == config.Embedded {
				fmt.Fprintf(stderr, "No configuration file (serving the embedded default), so nothing was stored.\n"+
					"Add this under http.agents of your mcp.yaml (countersign init writes one):\n\n"+
					"    - {id: %s, token_sha256: %s}\n\n", name, hash)
			} else if stored, err := addAgentToFile(c.Source, name, hash); err != nil {
				return err
			} else if stored {
				fmt.Fprintf(stderr, "Agent %s added to %s (only the token's SHA-256 is stored). Restart serve, or run countersign reload, to apply.\n", name, c.Source)
			} else {
				fmt.Fprintf(stderr, "http.agents in %s is written in a form this command does not edit, so nothing was stored.\n"+
					"Add this item to it:\n\n    - {id: %s, token_sha256: %s}\n\n", c.Source, name, hash)
			}
			fmt.Fprintf(stderr, "Its bearer token, shown this once:\n")
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "remove NAME",
		Short: "Remove an agent and its bearer token from the configuration",
		Long: `Remove deletes the agent NAME from http.agents of the configuration file, the
rest of the file, comments included, kept. A running serve keeps accepting its
token until it is restarted.

The last agent is not removed while http.oauth is off: with no agents the
listener would take every loopback caller as "anonymous". Add another agent
first, or edit the file if that is what you want.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := configuredAgent(cmd, args[0])
			if err != nil {
				return err
			}
			if len(c.HTTP.Agents) == 1 && !c.HTTP.OAuth.Enabled() {
				return configError(fmt.Errorf("%s: http.agents: %s is the only agent; without it every caller on a loopback listener is \"anonymous\" (add another agent first, or edit the file)", c.Source, args[0]))
			}
			stored, err := editAgents(c.Source, func(data []byte) ([]byte, bool) { return removeAgentItem(data, args[0]) },
				func(agents []config.Agent) bool {
					return len(agents) == len(c.HTTP.Agents)-1 && !slices.ContainsFunc(agents, func(a config.Agent) bool { return a.ID == args[0] })
				})
			if err != nil {
				return err
			}
			if !stored {
				return fmt.Errorf("http.agents in %s is written in a form this command does not edit, so nothing was changed: remove the item with id %s yourself", c.Source, args[0])
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Agent %s removed from %s. Restart serve (or run countersign reload) to apply: until then its token still works.\n", args[0], c.Source)
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate NAME",
		Short: "Give an agent a new bearer token; print it once, and the old one stops working",
		Long: `Rotate creates a new random bearer token for the agent NAME, prints it once on
stdout and stores only its SHA-256 in place of the old one under http.agents of
the configuration file, the rest of the file, comments included, kept. A
running serve accepts the old token, and not the new one, until it is
restarted; after that only the new one works.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := configuredAgent(cmd, args[0])
			if err != nil {
				return err
			}
			token, hash, err := newToken()
			if err != nil {
				return err
			}
			stored, err := editAgents(c.Source, func(data []byte) ([]byte, bool) { return replaceAgentHash(data, args[0], hash) },
				func(agents []config.Agent) bool {
					return slices.ContainsFunc(agents, func(a config.Agent) bool { return a.ID == args[0] && a.TokenSHA256 == hash })
				})
			if err != nil {
				return err
			}
			stderr := cmd.ErrOrStderr()
			if stored {
				fmt.Fprintf(stderr, "Agent %s has a new token in %s (only its SHA-256 is stored). Restart serve (or run countersign reload) to apply: the old token works until then, and not after.\n", args[0], c.Source)
			} else {
				fmt.Fprintf(stderr, "http.agents in %s is written in a form this command does not edit, so nothing was stored.\n"+
					"Set the token_sha256 of %s to:\n\n    %s\n\n", c.Source, args[0], hash)
			}
			fmt.Fprintf(stderr, "Its bearer token, shown this once:\n")
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the agents the configuration allows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			freezes, err := storedFreezes(cmd, c)
			if err != nil {
				return err
			}
			status := func(agent string) string {
				for _, f := range freezes {
					if f.Agent == agent || f.Agent == freeze.AllAgents {
						return "frozen: " + freezeStatus(f)
					}
				}
				return "active"
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "AGENT\tTRANSPORT\tTOKEN SHA-256\tSTATUS")
			fmt.Fprintf(w, "%s\tstdio\t(none: the process that starts serve; server.stdio_agent)\t%s\n", c.Server.StdioAgent, status(c.Server.StdioAgent))
			if len(c.HTTP.Agents) == 0 {
				fmt.Fprintf(w, "anonymous\thttp\t(none: no http.agents, so loopback only)\t%s\n", status("anonymous"))
			}
			for _, a := range c.HTTP.Agents {
				fmt.Fprintf(w, "%s\thttp\t%s…\t%s\n", a.ID, a.TokenSHA256[:16], status(a.ID))
			}
			// Frozen names the configuration does not list.
			known := configuredAgents(c)
			for _, f := range freezes {
				if f.Agent != freeze.AllAgents && !slices.Contains(known, f.Agent) {
					fmt.Fprintf(w, "%s\t-\t(not in config)\tfrozen: %s\n", f.Agent, freezeStatus(f))
				}
			}
			return w.Flush()
		},
	})
	return cmd
}

// configuredAgent loads the configuration file and checks it names the
// agent id under http.agents, for the commands that change one.
func configuredAgent(cmd *cobra.Command, id string) (*config.Config, error) {
	c, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	if c.Source == config.Embedded {
		return nil, configError(fmt.Errorf("no configuration file (serving the embedded default, which has no agents): give --config"))
	}
	if !slices.ContainsFunc(c.HTTP.Agents, func(a config.Agent) bool { return a.ID == id }) {
		return nil, configError(fmt.Errorf("%s: http.agents: no agent %q (see countersign agents list)", c.Source, id))
	}
	return c, nil
}

// newToken returns a random bearer token and the hex SHA-256 the
// configuration stores. The prefix lets secret scanners recognise it.
func newToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	token = "cs_" + base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(token))
	return token, hex.EncodeToString(sum[:]), nil
}

// addAgentToFile adds {id, token_sha256} to http.agents of the YAML file at
// path (see [editAgents]).
func addAgentToFile(path, id, hash string) (stored bool, err error) {
	return editAgents(path, func(data []byte) ([]byte, bool) {
		return insertAgent(data, fmt.Sprintf("{id: %s, token_sha256: %s}", id, hash))
	}, func(agents []config.Agent) bool {
		return slices.ContainsFunc(agents, func(a config.Agent) bool { return a.ID == id && a.TokenSHA256 == hash })
	})
}

// insertAgent returns data with item added to http.agents, or false when
// the document has a shape it does not edit.
func insertAgent(data []byte, item string) ([]byte, bool) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, false
	}
	text := string(data)
	if text != "" && !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	lines := strings.SplitAfter(text, "\n")
	insert := func(after int, add ...string) []byte { // after: 1-based line
		out := slices.Clone(lines[:after])
		out = append(out, add...)
		out = append(out, lines[after:]...)
		return []byte(strings.Join(out, ""))
	}
	httpKey, httpVal := lookupKey(doc.Content[0], "http")
	if httpKey == nil {
		return []byte(text + "http:\n  agents:\n    - " + item + "\n"), true
	}
	if httpVal.Kind != yaml.MappingNode || httpVal.Style&yaml.FlowStyle != 0 {
		return nil, false
	}
	indent := httpKey.Column - 1 + 2
	if len(httpVal.Content) > 0 {
		indent = httpVal.Content[0].Column - 1
	}
	pad := strings.Repeat(" ", indent)
	key, val := lookupKey(httpVal, "agents")
	switch {
	case key == nil:
		return insert(httpKey.Line, pad+"agents:\n", pad+"  - "+item+"\n"), true
	case val.Kind == yaml.ScalarNode && val.Tag == "!!null" && val.Value == "":
		return insert(key.Line, pad+"  - "+item+"\n"), true
	case val.Kind == yaml.SequenceNode && val.Style&yaml.FlowStyle != 0 && len(val.Content) == 0:
		line := lines[val.Line-1]
		at := val.Column - 1
		if !strings.HasPrefix(line[at:], "[]") {
			return nil, false
		}
		lines[val.Line-1] = line[:at] + line[at+2:]
		return insert(val.Line, pad+"  - "+item+"\n"), true
	case val.Kind == yaml.SequenceNode && val.Style&yaml.FlowStyle == 0 && len(val.Content) > 0:
		first := val.Content[0]
		dash := strings.LastIndex(lines[first.Line-1][:first.Column-1], "-")
		if dash < 0 {
			return nil, false
		}
		return insert(lastLine(val), strings.Repeat(" ", dash)+"- "+item+"\n"), true
	}
	return nil, false
}

func lookupKey(m *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// lastLine is the last line a node's text is on, as far as its scalars
// tell (a block list item ends with its last value).
func lastLine(n *yaml.Node) int {
	last := n.Line
	for _, c := range n.Content {
		last = max(last, lastLine(c))
	}
	return last
}
