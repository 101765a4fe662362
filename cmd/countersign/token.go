package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/countersign/countersign/token"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Verify approval tokens and print the key set that signs them",
		Long: `An approval token is Countersign's signed statement that the humans named in
it approved exactly one action with their security keys (EdDSA JWS; the
format is in the documentation of package token). Countersigned MCP results
carry one in _meta["countersign/approval"], upstream calls receive one in
their request's _meta, and the CIBA token endpoint returns one.`,
	}
	cmd.AddCommand(newTokenVerifyCmd(), newTokenJWKSCmd())
	return cmd
}

func newTokenVerifyCmd() *cobra.Command {
	var jwks, issuerWant, audience, at string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify TOKEN",
		Short: "Check an approval token's signature and claims, and print what was approved",
		Long: `verify checks an approval token (or "-" to read it from stdin) against a JWK
Set: --jwks is a URL (e.g. http://127.0.0.1:8711/.well-known/jwks.json) or a
file. Without --jwks it uses the token key of the configured data directory.
It then prints who approved what. Exit status 0 only for a valid token.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw := args[0]
			if raw == "-" {
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20))
				if err != nil {
					return err
				}
				raw = string(b)
			}
			keys, source, err := loadKeySet(cmd, jwks)
			if err != nil {
				return err
			}
			opts := token.VerifyOptions{Issuer: issuerWant, Audience: audience}
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return fmt.Errorf("--at: %w", err)
				}
				opts.Now = func() time.Time { return t }
			}
			c, err := token.Verify(raw, keys, opts)
			if err != nil {
				return fmt.Errorf("invalid approval token (keys from %s): %w", source, err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(c)
			}
			printClaims(cmd.OutOrStdout(), c, source)
			return nil
		},
	}
	cmd.Flags().StringVar(&jwks, "jwks", "", "JWK Set URL or file (default: this Countersign's own key, from the data directory)")
	cmd.Flags().StringVar(&issuerWant, "issuer", "", "require this iss")
	cmd.Flags().StringVar(&audience, "audience", "", "require this aud (the agent or CIBA client the approval was given to)")
	cmd.Flags().StringVar(&at, "at", "", "check iat and exp at this RFC 3339 time instead of now (to audit an old token)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the verified claims as JSON")
	return cmd
}

func newTokenJWKSCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "jwks",
		Short: "Print the JWK Set of this Countersign's approval token key",
		Long: `jwks prints the key set the agent listener publishes at /.well-known/jwks.json,
from the data directory's server key, for verifiers of a Countersign that
serves no HTTP listener.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			signer, err := daemon.TokenSigner(c)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(signer.JWKS())
		},
	}
}

// loadKeySet reads a JWK Set from a URL or a file, or derives this
// Countersign's own from its data directory.
func loadKeySet(cmd *cobra.Command, src string) (jose.JSONWebKeySet, string, error) {
	var data []byte
	switch {
	case src == "":
		c, err := loadConfig(cmd)
		if err != nil {
			return jose.JSONWebKeySet{}, "", err
		}
		if _, err := os.Stat(filepath.Join(c.Server.DataDir, audit.KeyFile)); err != nil && !c.Audit.PKCS11.Enabled() {
			return jose.JSONWebKeySet{}, "", fmt.Errorf("no --jwks given, and %s has no server key to derive the token key from: %w", c.Server.DataDir, err)
		}
		signer, err := daemon.TokenSigner(c)
		if err != nil {
			return jose.JSONWebKeySet{}, "", err
		}
		return signer.JWKS(), "the data directory " + c.Server.DataDir, nil
	case strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://"):
		ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return jose.JSONWebKeySet{}, "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return jose.JSONWebKeySet{}, "", fmt.Errorf("--jwks: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return jose.JSONWebKeySet{}, "", fmt.Errorf("--jwks: %s answered %s", src, resp.Status)
		}
		if data, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err != nil {
			return jose.JSONWebKeySet{}, "", fmt.Errorf("--jwks: %w", err)
		}
	default:
		var err error
		if data, err = os.ReadFile(src); err != nil {
			return jose.JSONWebKeySet{}, "", fmt.Errorf("--jwks: %w", err)
		}
	}
	set, err := token.ParseKeySet(data)
	if err != nil {
		return set, "", fmt.Errorf("--jwks %s: %w", src, err)
	}
	return set, src, nil
}

func printClaims(w io.Writer, c *token.Claims, source string) {
	fmt.Fprintf(w, "valid approval token (keys from %s)\n", source)
	fmt.Fprintf(w, "  issuer:      %s\n", c.Issuer)
	fmt.Fprintf(w, "  audience:    %s\n", c.Audience)
	fmt.Fprintf(w, "  request:     %s\n", c.AuthReqID)
	fmt.Fprintf(w, "  tool:        %s\n", c.Tool)
	fmt.Fprintf(w, "  issued:      %s\n", c.IssuedAtTime().Format(time.RFC3339))
	fmt.Fprintf(w, "  expires:     %s\n", c.ExpiryTime().Format(time.RFC3339))
	fmt.Fprintf(w, "  approved by:\n")
	for _, a := range c.Approvers {
		fmt.Fprintf(w, "    %s at %s", a.ID, a.At)
		if a.AssertionSHA256 != "" {
			fmt.Fprintf(w, " (assertion sha256 %s)", a.AssertionSHA256)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  action digest: %s\n", c.Digest)
	fmt.Fprintf(w, "  args sha256:   %s\n", c.ArgsSHA256)
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, c.AuthorizationDetails, "    ", "  "); err != nil {
		pretty.Write(c.AuthorizationDetails)
	}
	fmt.Fprintf(w, "  authorization_details:\n    %s\n", pretty.String())
}
