package pipeline

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync/atomic"
	"time"
)

var idCounter atomic.Uint32

// NewID returns a Mongo ObjectId-like hex string: 4 bytes of time, 5 random,
// 3 of a counter, so ids sort by creation time as e-mission's do.
func NewID() string {
	var b [12]byte
	t := uint32(time.Now().Unix())
	b[0], b[1], b[2], b[3] = byte(t>>24), byte(t>>16), byte(t>>8), byte(t)
	_, _ = rand.Read(b[4:9])
	c := idCounter.Add(1)
	b[9], b[10], b[11] = byte(c>>16), byte(c>>8), byte(c)
	return hex.EncodeToString(b[:])
}

func errorsJoin(errs ...error) error { return errors.Join(errs...) }
