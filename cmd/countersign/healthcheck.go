package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/spf13/cobra"
)

func newHealthcheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when a running server answers /healthz (a container's HEALTHCHECK)",
		Long: `Healthcheck asks the running server's approver listener for /healthz, as a
container's HEALTHCHECK or a supervisor would, so that an image needs no curl.
The address is approval.listen from the same configuration serve reads (an
unspecified host such as 0.0.0.0 is asked on loopback; https when
approval.tls_cert_file is set), or --url. It exits 0 on 200 and 1 otherwise,
saying why on stderr.

Its certificate is not checked: the question is only whether the process on
this machine's loopback answers, and nothing is sent with it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			target, _ := cmd.Flags().GetString("url")
			if target == "" {
				path, _ := cmd.Flags().GetString("config")
				// Only the listener's address is needed: a file that became
				// invalid after the server started must not fail its probe.
				c, err := config.Check(path)
				if c == nil {
					return configError(err)
				}
				if target, err = healthzURL(c.Approval); err != nil {
					return configError(err)
				}
			}
			timeout, _ := cmd.Flags().GetDuration("timeout")
			client := &http.Client{Timeout: timeout, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // see Long
			}}
			resp, err := client.Get(target)
			if err != nil {
				return fmt.Errorf("healthcheck: %w", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("healthcheck: GET %s: %s %s", target, resp.Status, strings.TrimSpace(string(body)))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", target, strings.TrimSpace(string(body)))
			return nil
		},
	}
	cmd.Flags().String("url", "", "the /healthz URL to ask (default: from approval.listen)")
	cmd.Flags().Duration("timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}

// healthzURL is the /healthz of the approver listener a as seen from this
// machine: a listener on every address is reached on loopback.
func healthzURL(a config.Approval) (string, error) {
	host, port, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return "", fmt.Errorf("approval.listen %q: %w", a.Listen, err)
	}
	switch ip := net.ParseIP(strings.Trim(host, "[]")); {
	case host == "" || (ip != nil && ip.Equal(net.IPv4zero)):
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	scheme := "http"
	if a.TLSCertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/healthz", nil
}
