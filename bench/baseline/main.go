// Command baseline is the yardstick for Countersign's per-call cost: a bare
// mcp-go server serving the same routine tools (get_balance, and a small
// transfer) over the same kind of SQLite ledger, with no policy, no
// approvals and no audit log. bench/csbench runs it beside Countersign and
// reports Countersign's figures as ratios of these.
//
//	baseline -data DIR [-http 127.0.0.1:PORT]
//
// Without -http it serves MCP on stdio.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools/ledger"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

func main() {
	data := flag.String("data", "", "data directory (required)")
	addr := flag.String("http", "", "serve Streamable HTTP at ADDR/mcp instead of stdio")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(*data, *addr, log); err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

func run(data, addr string, log *slog.Logger) error {
	if data == "" {
		return errors.New("-data is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The same accounts and payees as Countersign's embedded default.
	c, err := config.Parse(countersign.DefaultConfig(), config.Embedded)
	if err != nil {
		return err
	}
	db, err := store.Connect(ctx, filepath.Join(data, store.FileName))
	if err != nil {
		return err
	}
	defer db.Close()
	l, err := ledger.Open(ctx, db, c.Ledger)
	if err != nil {
		return err
	}

	s := server.NewMCPServer("baseline", "1", server.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("get_balance", mcp.WithDescription("Show account balances."),
		mcp.WithString("account", mcp.Description("Account id; omit for all accounts."))),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			id := req.GetString("account", "")
			all, err := l.Accounts(ctx)
			if err != nil {
				return mcp.NewToolResultError(err.Error()), nil
			}
			var out []map[string]any
			for _, a := range all {
				if id != "" && a.ID != id {
					continue
				}
				out = append(out, map[string]any{"id": a.ID, "name": a.Name, "currency": a.Currency,
					"balance": ledger.FormatAmount(a.Balance, a.Currency), "display": ledger.FormatHuman(a.Balance, a.Currency)})
			}
			return mcp.NewToolResultStructuredOnly(map[string]any{"accounts": out}), nil
		})
	s.AddTool(mcp.NewTool("transfer", mcp.WithDescription("Pay a payee."),
		mcp.WithString("from", mcp.Required()), mcp.WithString("to", mcp.Required()),
		mcp.WithNumber("amount", mcp.Required()), mcp.WithString("currency", mcp.Required())),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			amount, err := ledger.ParseAmount(fmt.Sprint(req.GetFloat("amount", 0)), req.GetString("currency", ""))
			if err != nil {
				return mcp.NewToolResultError(err.Error()), nil
			}
			t, err := l.Transfer(ctx, ledger.TransferRequest{From: req.GetString("from", ""), To: req.GetString("to", ""),
				Currency: req.GetString("currency", ""), Amount: amount})
			if err != nil {
				return mcp.NewToolResultError(err.Error()), nil
			}
			return mcp.NewToolResultStructuredOnly(map[string]any{"id": t.ID, "balance_after": t.BalanceAfter}), nil
		})

	if addr == "" {
		return server.NewStdioServer(s).Listen(ctx, os.Stdin, os.Stdout)
	}
	h := server.NewStreamableHTTPServer(s, server.WithEndpointPath("/mcp"), server.WithStreamableHTTPLogger(log))
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
