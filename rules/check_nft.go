package rules

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// CheckNft compares `nft -j list ruleset` output with what Nftables gives,
// by the facts that matter to the gate rather than rule by rule (nft
// rewrites expressions as it stores them): the table, the queue numbers
// and bypass, the interface match, and, failing open, the accept mark and
// the protected sets. A fact Nftables implies and the ruleset lacks is
// missing; one the ruleset states otherwise is stale.
func (s Steering) CheckNft(listing []byte, opt CheckOptions) (CheckResult, error) {
	s, err := s.prepared()
	if err != nil {
		return CheckResult{}, err
	}
	live, err := nftFacts(listing)
	if err != nil {
		return CheckResult{}, err
	}
	want := s.nftFacts()
	if opt.AnyInterface {
		want = slices.DeleteFunc(want, func(f string) bool { return strings.HasPrefix(f, "interface ") })
		live = slices.DeleteFunc(live, func(f string) bool { return strings.HasPrefix(f, "interface ") })
	}
	var r CheckResult
	for _, f := range want {
		if !slices.Contains(live, f) {
			r.Missing = append(r.Missing, f)
		}
	}
	for _, f := range live {
		if !slices.Contains(want, f) {
			r.Stale = append(r.Stale, f)
		}
	}
	return r, nil
}

// nftFacts are the facts the rules Nftables prints state.
func (s Steering) nftFacts() []string {
	facts := []string{"table inet " + NftTable}
	queue := "queue " + strings.Replace(QueueRange(s.Queue, s.Queues), ":", "-", 1)
	if s.FailOpen != nil {
		queue += " bypass"
	}
	facts = append(facts, queue)
	if s.Interface != "" {
		facts = append(facts, "interface == "+s.Interface)
	} else {
		facts = append(facts, "interface != lo")
	}
	if fo := s.FailOpen; fo != nil && len(fo.Protected) > 0 {
		facts = append(facts, fmt.Sprintf("accept mark %#x/%#x", fo.Mark, fo.Mask))
		elems := map[string][]string{}
		for _, r := range portRuns(fo.Protected) {
			elems[r.proto.String()] = append(elems[r.proto.String()], strings.Replace(r.String(), ":", "-", 1))
		}
		for _, proto := range nftProtos {
			if e := elems[proto.String()]; len(e) > 0 {
				facts = append(facts, fmt.Sprintf("protected %s %s", proto, strings.Join(e, ",")))
			}
		}
	}
	return facts
}

// nftFacts reads the facts of the knockgate table out of a JSON listing.
func nftFacts(listing []byte) ([]string, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(listing, &doc); err != nil {
		return nil, fmt.Errorf("failed to read nft's JSON listing: %w", err)
	}
	var facts []string
	for _, obj := range doc.Nftables {
		switch {
		case obj["table"] != nil:
			var t struct{ Family, Name string }
			json.Unmarshal(obj["table"], &t)
			if t.Family == "inet" && t.Name == NftTable {
				facts = append(facts, "table inet "+NftTable)
			}
		case obj["set"] != nil:
			var set struct {
				Family, Table, Name string
				Elem                []json.RawMessage
			}
			json.Unmarshal(obj["set"], &set)
			proto, ok := strings.CutPrefix(set.Name, "protected_")
			if set.Table != NftTable || !ok {
				continue
			}
			var elems []string
			for _, e := range set.Elem {
				var n int
				var rng struct{ Range [2]int }
				if json.Unmarshal(e, &n) == nil {
					elems = append(elems, fmt.Sprint(n))
				} else if json.Unmarshal(e, &rng) == nil {
					elems = append(elems, fmt.Sprintf("%d-%d", rng.Range[0], rng.Range[1]))
				}
			}
			facts = append(facts, fmt.Sprintf("protected %s %s", proto, strings.Join(elems, ",")))
		case obj["rule"] != nil:
			var rule struct {
				Table, Chain string
				Expr         []map[string]json.RawMessage
			}
			json.Unmarshal(obj["rule"], &rule)
			if rule.Table != NftTable {
				continue
			}
			facts = append(facts, ruleFacts(rule.Chain, rule.Expr)...)
		}
	}
	slices.Sort(facts)
	return slices.Compact(facts), nil
}

// ruleFacts reads the queue statement and interface match of the
// prerouting rule and the accept mark match of the input chain.
func ruleFacts(chain string, exprs []map[string]json.RawMessage) []string {
	var facts []string
	for _, e := range exprs {
		if q := e["queue"]; q != nil && chain == "prerouting" {
			var queue struct {
				Num   json.RawMessage
				Flags json.RawMessage
			}
			json.Unmarshal(q, &queue)
			var n int
			var rng struct{ Range [2]int }
			num := "?"
			if json.Unmarshal(queue.Num, &n) == nil {
				num = fmt.Sprint(n)
			} else if json.Unmarshal(queue.Num, &rng) == nil {
				num = fmt.Sprintf("%d-%d", rng.Range[0], rng.Range[1])
			}
			var flag string
			var flags []string
			json.Unmarshal(queue.Flags, &flag)
			json.Unmarshal(queue.Flags, &flags)
			if flag == "bypass" || slices.Contains(flags, "bypass") {
				num += " bypass"
			}
			facts = append(facts, "queue "+num)
		}
		m := e["match"]
		if m == nil {
			continue
		}
		var match struct {
			Op    string
			Left  struct{ Meta struct{ Key string } }
			Right json.RawMessage
		}
		json.Unmarshal(m, &match)
		switch match.Left.Meta.Key {
		case "iifname":
			var name string
			if json.Unmarshal(match.Right, &name) == nil && chain == "prerouting" {
				facts = append(facts, "interface "+match.Op+" "+name)
			}
		case "mark":
			// nft stores "mark & MASK != VALUE" with a contiguous mask as
			// a prefix match.
			var p struct {
				Prefix struct {
					Addr uint32
					Len  int
				}
			}
			if json.Unmarshal(match.Right, &p) == nil && chain == "input" && p.Prefix.Len > 0 {
				mask := ^uint32(0) << (32 - p.Prefix.Len)
				facts = append(facts, fmt.Sprintf("accept mark %#x/%#x", p.Prefix.Addr, mask))
			}
		}
	}
	return facts
}
