package store

import (
	"bytes"
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

func newRecID() recID {
	var r recID
	copy(r[:], randomBytes(16))
	return r
}
