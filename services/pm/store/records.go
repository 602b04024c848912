package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// recID is a record's random id, its key in the docs and index buckets.
type recID [16]byte

func encodeDoc(doc map[string]any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func decodeDoc(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

func (s *Store) readDoc(tx *bolt.Tx, rec recID) (map[string]any, error) {
	plain, err := s.readRaw(tx, rec)
	if err != nil {
		return nil, err
	}
	return decodeDoc(plain)
}

// readRaw returns a record's document as the JSON it was stored as.
func (s *Store) readRaw(tx *bolt.Tx, rec recID) ([]byte, error) {
	v := tx.Bucket(bucketDocs).Get(rec[:])
	if v == nil {
		return nil, fmt.Errorf("record %x: document missing", rec)
	}
	plain, err := s.open(v, adFor("doc", rec[:]))
	if err != nil {
		return nil, fmt.Errorf("record %x: document fails authentication", rec)
	}
	if plain, err = unpad(plain); err != nil {
		return nil, fmt.Errorf("record %x: %w", rec, err)
	}
	return plain, nil
}

// putRecord seals and writes a document's JSON and its index tuple.
func (s *Store) putRecord(tx *bolt.Tx, rec recID, t tuple, raw []byte) error {
	// New records are appended (newRecID): fill pages before splitting.
	tx.Bucket(bucketDocs).FillPercent = 0.9
	tx.Bucket(bucketIndex).FillPercent = 0.9
	if err := tx.Bucket(bucketDocs).Put(rec[:], s.seal(pad(raw, padBlock), adFor("doc", rec[:]))); err != nil {
		return err
	}
	return tx.Bucket(bucketIndex).Put(rec[:], s.seal(pad(t.marshal(), 64), adFor("idx", rec[:])))
}

func (s *Store) deleteRecord(tx *bolt.Tx, rec recID) error {
	if err := tx.Bucket(bucketDocs).Delete(rec[:]); err != nil {
		return err
	}
	return tx.Bucket(bucketIndex).Delete(rec[:])
}

// newRecID returns a new record id: the current write transaction's number
// (8 bytes, big-endian), then 8 random bytes. Records written together sit
// together at the end of the file's B+trees, so a batch of 1,000 rewrites a
// few hundred pages instead of one or two per record (random ids scattered
// each write over the whole tree: 2.6 times the time and a file half empty).
// A volume whose ids are all random (written before) keeps its ids; new ones
// start after the largest.
func (s *Store) newRecID() recID {
	var r recID
	copy(r[8:], randomBytes(8))
	if s.txNum == 0 { // the counter ran out: random ids again
		copy(r[:8], randomBytes(8))
		return r
	}
	binary.BigEndian.PutUint64(r[:8], s.txNum)
	return r
}

// beginWrite numbers a write transaction (under s.mu): its new records'
// ids start with the number.
func (s *Store) beginWrite() {
	if s.txNum != 0 {
		s.txNum++
	}
}

// readTupleID returns the query.Key of a record's _id, read from its sealed
// index tuple: a few dozen bytes to open instead of the whole document.
func (s *Store) readTupleID(tx *bolt.Tx, rec recID) (string, error) {
	v := tx.Bucket(bucketIndex).Get(rec[:])
	if v == nil {
		return "", fmt.Errorf("record %x: index tuple missing", rec)
	}
	plain, err := s.open(v, adFor("idx", rec[:]))
	if err != nil {
		return "", fmt.Errorf("record %x: index tuple fails authentication", rec)
	}
	if plain, err = unpad(plain); err != nil {
		return "", fmt.Errorf("record %x: %w", rec, err)
	}
	var t tupleView
	if err := t.parse(plain); err != nil {
		return "", fmt.Errorf("record %x: %w", rec, err)
	}
	return string(t.id), nil
}
