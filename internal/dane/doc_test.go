package dane

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// docTable renders decideRows as the decision table published in
// docs/tls-policy.md.
func docTable() []string {
	cell := func(s State) string {
		if s == NotLooked {
			return "—"
		}
		return s.String()
	}
	act := func(d Decision) string {
		if d.Code != "" {
			return d.Action.String() + " " + d.Code
		}
		return d.Action.String()
	}
	var out []string
	for i, row := range decideRows {
		tlsa := cell(row.in.TLSA)
		if len(row.in.Records) > 0 {
			tlsa += ": " + Params(row.in.Records)
		}
		in := row.in
		in.Setting = Opportunistic
		opp := Decide(in)
		in.Setting = Mandatory
		mand := Decide(in)
		out = append(out, fmt.Sprintf("| %d | %s | %s | %s | not-dane | %s | %s | %s | %s |",
			i+1, cell(row.in.MX), cell(row.in.Addr), tlsa, act(opp), act(mand), opp.Clause, opp.Reason))
	}
	return out
}

// TestDocTable keeps the published table and the code in step: every row
// of decideRows, as Decide answers it, must appear in docs/tls-policy.md.
func TestDocTable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/tls-policy.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := docTable()
	missing := false
	for _, r := range rows {
		if !strings.Contains(string(doc), r+"\n") {
			missing = true
			t.Errorf("docs/tls-policy.md lacks the row\n%s", r)
		}
	}
	if missing {
		t.Logf("the table as the code decides it:\n%s", strings.Join(rows, "\n"))
	}
}
