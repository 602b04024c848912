package client_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/client/clienttest"
	"github.com/e-mission/upc/internal/realdata"
)

// BenchmarkSoakDocker holds a router (in process, over the local engine, TLS
// on every hop) and its users' real PM containers under load (see
// clienttest.Soak): UPC_SOAK_USERS users (default 8) for UPC_SOAK_DURATION
// (default 1m). It reports requests, errors (a limit's refusals apart), p50
// and p99 latency per kind and resident memory before and after. Once:
//
//	UPC_SOAK_USERS=8 UPC_SOAK_DURATION=2m go test -run '^$' -bench BenchmarkSoakDocker -benchtime=1x ./client/
func BenchmarkSoakDocker(b *testing.B) {
	users, dur := clienttest.SoakSize(b, 8, time.Minute)
	tr := clienttest.StartRouter(b, "pm")
	day, err := client.LoadDay(filepath.Join(realdata.DirT(b), "shankari_2015-08-23"))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	res := clienttest.Soak(b, tr, users, dur, day)
	b.StopTimer()
	res.Report(b)
	res.Metrics(b)
}
