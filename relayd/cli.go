package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jnrelay/jnrelay/provision"
)

const cliUsage = `commands (talk to a running relayd through its provisioning API):
  status                     relay status (sessions, channels, traffic, port mappings)
  config get                 print the configuration (secrets redacted)
  config set FILE            replace the configuration with FILE ("-" = stdin)
  config edit                edit the configuration in $EDITOR and apply it
  channels                   list live channels
  channels kill ID           end a channel now
  usage                      bytes relayed and calls served per day and month, live calls per minute
  logs [N]                   recent log lines (default 100)
  token rotate               replace the TCP API's bearer token
  token show                 print the TCP API's bearer token (for the web page)
`

// runCommand runs a CLI command against the API on f.socket.
func runCommand(args []string, f apiFlags, stdout, stderr io.Writer) int {
	if strings.Join(args, " ") == "token show" {
		return showToken(f.stateDir, stdout, stderr)
	}
	c := provision.NewClient(clientSocket(f.socket))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	err := command(ctx, c, args, stdout)
	if err == nil {
		return 0
	}
	var apiErr *provision.Error
	if errors.As(err, &apiErr) {
		fmt.Fprintf(stderr, "relayd: %s (%s)\n", apiErr.Message, apiErr.Code)
		for _, fe := range apiErr.Fields {
			fmt.Fprintf(stderr, "  %s: %s\n", fe.Field, fe.Message)
		}
		return 1
	}
	fmt.Fprintln(stderr, "relayd:", err)
	if errors.Is(err, errUsage) {
		fmt.Fprint(stderr, cliUsage)
		return 2
	}
	return 1
}

var errUsage = errors.New("unknown command")

func command(ctx context.Context, c *provision.Client, args []string, stdout io.Writer) error {
	printJSON := func(raw []byte, err error) error {
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err = stdout.Write(buf.Bytes())
		return err
	}
	switch strings.Join(args[:min(len(args), 2)], " ") {
	case "status":
		return printJSON(c.Status(ctx))
	case "channels":
		return printJSON(c.Channels(ctx))
	case "usage":
		return printJSON(c.Usage(ctx))
	case "config get":
		doc, _, err := c.GetConfig(ctx)
		return printJSON(doc, err)
	case "channels kill":
		if len(args) != 3 {
			return fmt.Errorf("%w: channels kill ID", errUsage)
		}
		return c.KillChannel(ctx, args[2])
	case "token rotate":
		tok, err := c.RotateToken(ctx)
		if err == nil {
			fmt.Fprintln(stdout, tok)
		}
		return err
	case "config set":
		if len(args) != 3 {
			return fmt.Errorf("%w: config set FILE", errUsage)
		}
		var doc []byte
		var err error
		if args[2] == "-" {
			doc, err = io.ReadAll(os.Stdin)
		} else {
			doc, err = os.ReadFile(args[2])
		}
		if err != nil {
			return err
		}
		_, err = c.PutConfig(ctx, doc, "")
		return err
	case "config edit":
		return editConfig(ctx, c)
	}
	if args[0] == "logs" {
		n := 100
		if len(args) > 1 {
			if _, err := fmt.Sscan(args[1], &n); err != nil {
				return fmt.Errorf("%w: logs N", errUsage)
			}
		}
		lines, err := c.Logs(ctx, n)
		for _, l := range lines {
			fmt.Fprintln(stdout, l)
		}
		return err
	}
	return fmt.Errorf("%w: %s", errUsage, strings.Join(args, " "))
}

// editConfig opens the current document in $EDITOR and applies the result
// with If-Match, so a change made meanwhile by someone else is not lost.
func editConfig(ctx context.Context, c *provision.Client) error {
	doc, etag, err := c.GetConfig(ctx)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp("", "relayd-config-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	var pretty bytes.Buffer
	json.Indent(&pretty, doc, "", "  ")
	f.Write(pretty.Bytes())
	f.Close()
	editor := os.Getenv("EDITOR")
	if editor == "" {
		editor = "vi"
	}
	cmd := exec.CommandContext(ctx, editor, f.Name())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("editor: %w", err)
	}
	edited, err := os.ReadFile(f.Name())
	if err != nil {
		return err
	}
	if bytes.Equal(bytes.TrimSpace(edited), bytes.TrimSpace(pretty.Bytes())) {
		return nil
	}
	_, err = c.PutConfig(ctx, edited, etag)
	return err
}

// showToken prints the TCP API's bearer token, read from the state
// directory (root only: the file is 0600), for the donor web page's
// sign-in. relayd need not be running.
func showToken(stateDir string, stdout, stderr io.Writer) int {
	data, err := os.ReadFile(filepath.Join(stateDir, provision.TokenFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(stderr, "relayd: no API token in %s yet: relayd creates it when started with -api-tcp\n", stateDir)
		return 1
	case err != nil:
		fmt.Fprintln(stderr, "relayd:", err)
		return 1
	}
	fmt.Fprintln(stdout, strings.TrimSpace(string(data)))
	return 0
}

// Where the API socket is by default, and where OpenWrt's init script puts
// it (its /var/run is in RAM and there is no /run).
const (
	defaultAPISocket = "/run/jnrelay/api.sock"
	openwrtAPISocket = "/var/run/jnrelay/api.sock"
)

// clientSocket is the socket the CLI talks to: the one asked for, except
// that the default falls back to OpenWrt's place when only that exists.
func clientSocket(asked string) string {
	if asked != defaultAPISocket {
		return asked
	}
	if _, err := os.Stat(asked); err != nil {
		if _, err := os.Stat(openwrtAPISocket); err == nil {
			return openwrtAPISocket
		}
	}
	return asked
}
