package verdict

// allPorts is the mask of a door with n open ports.
func allPorts(n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

// portMask maps ports to the bits of door's open list; ports the door no
// longer opens are left out. nil means every port.
func portMask(door *Door, ports []Port) uint64 {
	if ports == nil {
		return ^uint64(0)
	}
	var m uint64
	for _, p := range ports {
		for i, o := range door.Open {
			if o == p {
				m |= 1 << i
			}
		}
	}
	return m
}

// remapPorts carries a grant's port mask from one version of a door to
// another, whose open list may have changed order or content: the grant
// keeps the ports it covered that the door still opens. A grant of every
// port stays one, as grantOf and portMask treat it. It does not allocate.
func remapPorts(from, to *Door, m uint64) uint64 {
	if m == ^uint64(0) || m == allPorts(len(from.Open)) {
		return ^uint64(0)
	}
	var out uint64
	for i, p := range from.Open {
		if m&(1<<i) == 0 {
			continue
		}
		for j, o := range to.Open {
			if o == p {
				out |= 1 << j
			}
		}
	}
	return out
}
