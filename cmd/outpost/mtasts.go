package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"outpost/internal/mtasts"
)

const mtastsUsage = `usage: outpost mta-sts check DOMAIN [--json]
       outpost mta-sts cache list | show DOMAIN | refresh DOMAIN | flush DOMAIN
`

func mtastsCmd(cfgPath string, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mtastsUsage)
		return 2
	}
	switch args[0] {
	case "cache":
		return mtastsCache(cfgPath, args[1:], stdout, stderr)
	case "check":
		return mtastsCheck(cfgPath, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, mtastsUsage)
	return 2
}

// mtastsCache administers the running daemon's policy cache.
func mtastsCache(cfgPath string, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "list" && len(args) < 2) {
		fmt.Fprint(stderr, mtastsUsage)
		return 2
	}
	c, code := client(cfgPath, stderr)
	if c == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fail := func(err error) int {
		fmt.Fprintln(stderr, "outpost:", err)
		return 1
	}
	switch args[0] {
	case "list":
		var list []mtasts.Entry
		if err := c.Do(ctx, "GET", "/v1/mta-sts/cache", &list); err != nil {
			return fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tMODE\tID\tMX\tFETCHED\tEXPIRES")
		for _, e := range list {
			mode, mx := "-", ""
			if e.Policy != nil {
				mode, mx = e.Policy.Mode.String(), strings.Join(e.Policy.MX, ",")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Domain, mode, e.ID, mx, e.FetchedAt.Local().Format(time.DateTime), e.Expires.Local().Format(time.DateTime))
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d cached policy(ies)\n", len(list))
		return 0
	case "show", "refresh":
		method, path := "GET", "/v1/mta-sts/cache/"+args[1]
		if args[0] == "refresh" {
			method, path = "POST", path+"/refresh"
		}
		var e mtasts.Entry
		if err := c.Do(ctx, method, path, &e); err != nil {
			return fail(err)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(e)
		return 0
	case "flush":
		if err := c.Do(ctx, "POST", "/v1/mta-sts/cache/"+args[1]+"/flush", nil); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "MTA-STS policy for %s flushed from the cache\n", args[1])
		return 0
	}
	fmt.Fprint(stderr, mtastsUsage)
	return 2
}
