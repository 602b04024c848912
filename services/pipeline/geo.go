package pipeline

import "math"

const earthRadius = 6371000 // m, e-mission's value

const degToRad = math.Pi / 180.0

// Haversine is e-mission's calDistance between two (lng, lat) points in
// metres, with its exact operation order so results match bit for bit.
func Haversine(lng1, lat1, lng2, lat2 float64) float64 {
	dLat := (lat1 - lat2) * degToRad
	dLon := (lng1 - lng2) * degToRad
	rlat1 := lat1 * degToRad
	rlat2 := lat2 * degToRad
	a := pyPow2(pySin(dLat/2)) + pyPow2(pySin(dLon/2))*pyCos(rlat1)*pyCos(rlat2)
	c := 2 * pyAtan2(math.Sqrt(a), math.Sqrt(1-a))
	return earthRadius * c
}
