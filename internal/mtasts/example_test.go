package mtasts_test

import (
	"fmt"

	"outpost/internal/mtasts"
)

func ExampleParsePolicy() {
	p, err := mtasts.ParsePolicy("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Mode, p.MaxAge, p.Matches("MX1.example.net."), p.Matches("a.b.example.net"))
	// Output: enforce 604800 true false
}

func ExampleParseTXT() {
	rec, err := mtasts.ParseTXT("v=STSv1; id=20160831085700Z;")
	fmt.Println(rec.ID, err)
	_, err = mtasts.ParseTXT("v=STSV1; id=12345678598Z;")
	fmt.Println(err)
	// Output:
	// 20160831085700Z <nil>
	// invalid MTA-STS TXT record: does not start with v=STSv1 (case-sensitive)
}
