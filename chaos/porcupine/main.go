// Command porcupine is a second opinion on chaos/txn_linearizability.py: it checks a bank
// history (JSON lines, one TxnOp each, as chaos.txn_linearizability.dump_jsonl writes
// them) with Porcupine (github.com/anishathalye/porcupine, the checker etcd's robustness
// tests use), using the same model written again here: the state is every key's
// (value, mod revision) plus L, a lower bound on the cluster's revision; an ok txn takes
// effect at its reported revision R > L, a read or failed compare at its reported
// revision V >= L, and an unknown txn either never, or at an observed revision that no ok
// txn reported and that its puts agree with, or at an unobserved one (FRESH: no read or
// compare matches it; L stays). The history is partitioned by connected components of
// the keys ops touch. See the Python module's docstring for why the model is sound.
//
// Usage: porcupine [-timeout 60s] [-visualize out.html] HISTORY.jsonl
// Exit status: 0 linearizable, 1 not linearizable, 2 inconclusive (timeout), 3 bad input.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// op is one line of the history (chaos.txn_linearizability.TxnOp.to_json).
type op struct {
	Process  int             `json:"process"`
	Kind     string          `json:"kind"`
	Call     float64         `json:"call"`
	Ret      *float64        `json:"ret"`
	Outcome  string          `json:"outcome"`
	Compares [][2]any        `json:"compares"` // [key, expected mod revision (0: absent)]
	Puts     [][2]string     `json:"puts"`     // [key, value]
	Keys     []string        `json:"keys"`
	Result   [][3]any        `json:"result"` // [key, value, mod revision]
	Revision *int64          `json:"revision"`
	index    int             // line number (0-based)
	cmps     []cmp           // parsed compares
	got      map[string]kver // parsed result
	choices  []int64         // unknown txn: observed revisions it may have been applied at
}

type cmp struct {
	key string
	rev int64
}

// kver is a key's state: a value at a mod revision; rev fresh: written at an unobserved
// revision.
type kver struct {
	value string
	rev   int64
}

const fresh = -1

// state: the keys present, encoded canonically (sorted), and L.
type state struct {
	kv  string
	low int64
}

func decode(s string) map[string]kver {
	m := map[string]kver{}
	if s == "" {
		return m
	}
	for _, e := range strings.Split(s, "\x01") {
		f := strings.SplitN(e, "\x00", 3)
		var rev int64
		fmt.Sscan(f[2], &rev)
		m[f[0]] = kver{f[1], rev}
	}
	return m
}

func encode(m map[string]kver) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s\x00%s\x00%d", k, m[k].value, m[k].rev)
	}
	return strings.Join(parts, "\x01")
}

func holds(o *op, m map[string]kver) bool {
	for _, c := range o.cmps {
		e, ok := m[c.key]
		if c.rev == 0 {
			if ok {
				return false
			}
		} else if !ok || e.rev != c.rev {
			return false
		}
	}
	return true
}

func apply(o *op, m map[string]kver, rev int64) string {
	n := make(map[string]kver, len(m)+len(o.Puts))
	for k, v := range m {
		n[k] = v
	}
	for _, p := range o.Puts {
		if rev == fresh {
			n[p[0]] = kver{"", fresh}
		} else {
			n[p[0]] = kver{p[1], rev}
		}
	}
	return encode(n)
}

// step: every state op may lead to from s (none: it cannot take effect there).
func step(st, input, _ any) []any {
	s, o := st.(state), input.(*op)
	m := decode(s.kv)
	rev := int64(math.MaxInt64)
	if o.Revision != nil {
		rev = *o.Revision
	}
	switch {
	case o.Kind == "read":
		for _, k := range o.Keys {
			e, present := m[k]
			w, want := o.got[k]
			if present != want || (present && e != w) {
				return nil
			}
		}
		return observe(s, rev)
	case o.Outcome == "compare_failed":
		if holds(o, m) {
			return nil
		}
		return observe(s, rev)
	case o.Outcome == "ok":
		if !holds(o, m) {
			return nil
		}
		if len(o.Puts) == 0 {
			return observe(s, rev)
		}
		if rev <= s.low {
			return nil
		}
		return []any{state{apply(o, m, rev), rev}}
	default: // unknown: never, at an observed revision, or at an unobserved one
		next := []any{s}
		if holds(o, m) {
			for _, r := range o.choices {
				if r > s.low {
					next = append(next, state{apply(o, m, r), r})
				}
			}
			next = append(next, state{apply(o, m, fresh), s.low})
		}
		return next
	}
}

func observe(s state, rev int64) []any {
	if rev == math.MaxInt64 {
		return []any{s}
	}
	if rev < s.low {
		return nil
	}
	return []any{state{s.kv, rev}}
}

func touched(o *op) []string {
	seen := map[string]bool{}
	var out []string
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, c := range o.cmps {
		add(c.key)
	}
	for _, p := range o.Puts {
		add(p[0])
	}
	for _, k := range o.Keys {
		add(k)
	}
	return out
}

// partition: connected components of the keys ops touch (union-find).
func partition(history []porcupine.Operation) [][]porcupine.Operation {
	parent := map[string]string{}
	var find func(string) string
	find = func(k string) string {
		if _, ok := parent[k]; !ok {
			parent[k] = k
		}
		for parent[k] != k {
			parent[k] = parent[parent[k]]
			k = parent[k]
		}
		return k
	}
	for _, h := range history {
		ks := touched(h.Input.(*op))
		for i := 1; i < len(ks); i++ {
			a, b := find(ks[0]), find(ks[i])
			if a != b {
				parent[b] = a
			}
		}
	}
	groups := map[string][]porcupine.Operation{}
	var order []string
	for _, h := range history {
		ks := touched(h.Input.(*op))
		if len(ks) == 0 {
			continue
		}
		r := find(ks[0])
		if _, ok := groups[r]; !ok {
			order = append(order, r)
		}
		groups[r] = append(groups[r], h)
	}
	out := make([][]porcupine.Operation, 0, len(order))
	for _, r := range order {
		out = append(out, groups[r])
	}
	return out
}

// choices: per unknown txn, the observed revisions that no ok txn reported and whose every
// observation agrees with its puts.
func choices(ops []*op) {
	produced := map[int64]bool{}
	values := map[int64]map[[2]string]bool{}
	keys := map[int64]map[string]bool{}
	for _, o := range ops {
		if o.Kind == "txn" && o.Outcome == "ok" && o.Revision != nil {
			produced[*o.Revision] = true
		}
		for k, e := range o.got {
			if values[e.rev] == nil {
				values[e.rev] = map[[2]string]bool{}
			}
			values[e.rev][[2]string{k, e.value}] = true
		}
		for _, c := range o.cmps {
			if c.rev > 0 {
				if keys[c.rev] == nil {
					keys[c.rev] = map[string]bool{}
				}
				keys[c.rev][c.key] = true
			}
		}
	}
	var observed []int64
	for r := range values {
		if !produced[r] {
			observed = append(observed, r)
		}
	}
	for r := range keys {
		if _, dup := values[r]; !dup && !produced[r] {
			observed = append(observed, r)
		}
	}
	sort.Slice(observed, func(i, j int) bool { return observed[i] < observed[j] })
	for _, o := range ops {
		if o.Kind != "txn" || o.Outcome != "unknown" {
			continue
		}
		puts, putKeys := map[[2]string]bool{}, map[string]bool{}
		for _, p := range o.Puts {
			puts[[2]string{p[0], p[1]}], putKeys[p[0]] = true, true
		}
		for _, r := range observed {
			ok := true
			for kv := range values[r] {
				ok = ok && puts[kv]
			}
			for k := range keys[r] {
				ok = ok && putKeys[k]
			}
			if ok {
				o.choices = append(o.choices, r)
			}
		}
	}
}

func load(path string) ([]*op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ops []*op
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for n := 0; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		o := &op{index: n}
		if err := json.Unmarshal([]byte(line), o); err != nil {
			return nil, fmt.Errorf("line %d: %w", n+1, err)
		}
		for _, c := range o.Compares {
			k, ok1 := c[0].(string)
			r, ok2 := c[1].(float64)
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("line %d: bad compare %v", n+1, c)
			}
			o.cmps = append(o.cmps, cmp{k, int64(r)})
		}
		o.got = map[string]kver{}
		for _, r := range o.Result {
			k, ok1 := r[0].(string)
			v, ok2 := r[1].(string)
			m, ok3 := r[2].(float64)
			if !ok1 || !ok2 || !ok3 {
				return nil, fmt.Errorf("line %d: bad result %v", n+1, r)
			}
			o.got[k] = kver{v, int64(m)}
		}
		ops = append(ops, o)
	}
	return ops, sc.Err()
}

func describe(input, _ any) string {
	o := input.(*op)
	rev := ""
	if o.Revision != nil {
		rev = fmt.Sprintf(" r%d", *o.Revision)
	}
	if o.Kind == "read" {
		parts := []string{}
		for _, k := range o.Keys {
			if e, ok := o.got[k]; ok {
				parts = append(parts, fmt.Sprintf("%s=%s@%d", k, e.value, e.rev))
			} else {
				parts = append(parts, k+"=absent")
			}
		}
		return fmt.Sprintf("#%d read %s%s", o.index, strings.Join(parts, " "), rev)
	}
	return fmt.Sprintf("#%d txn %v put %v -> %s%s", o.index, o.Compares, o.Puts, o.Outcome, rev)
}

func main() {
	timeout := flag.Duration("timeout", 60*time.Second, "give up (inconclusive) after this long")
	visualize := flag.String("visualize", "", "write Porcupine's HTML visualization here")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: porcupine [-timeout 60s] [-visualize out.html] HISTORY.jsonl")
		os.Exit(3)
	}
	ops, err := load(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "porcupine:", err)
		os.Exit(3)
	}
	choices(ops)
	const ns = 1e9
	var history []porcupine.Operation
	unknown := 0
	for _, o := range ops {
		if o.Outcome == "refused" || (o.Kind == "read" && o.Outcome != "ok") {
			continue
		}
		if o.Kind == "txn" && o.Outcome == "unknown" && len(o.Puts) == 0 {
			continue
		}
		ret := int64(math.MaxInt64)
		if o.Outcome == "unknown" {
			unknown++
		} else if o.Ret == nil {
			fmt.Fprintf(os.Stderr, "porcupine: line %d: a completed op without a return time\n", o.index+1)
			os.Exit(3)
		} else {
			ret = int64(*o.Ret * ns)
		}
		history = append(history, porcupine.Operation{
			ClientId: o.Process, Input: o, Call: int64(o.Call * ns), Return: ret,
		})
	}
	nm := &porcupine.NondeterministicModel{
		Partition: partition,
		Init:      func() []any { return []any{state{}} },
		Step:      step,
		Hash: func(s any) uint64 {
			h := fnv.New64a()
			fmt.Fprintf(h, "%s|%d", s.(state).kv, s.(state).low)
			return h.Sum64()
		},
		DescribeOperation: describe,
		DescribeState:     func(s any) string { return fmt.Sprintf("%q L=%d", s.(state).kv, s.(state).low) },
	}
	model := nm.ToModel()
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, history, *timeout)
	elapsed := time.Since(start)
	if *visualize != "" {
		if err := porcupine.VisualizePath(model, info, *visualize); err != nil {
			fmt.Fprintln(os.Stderr, "porcupine: visualization:", err)
		}
	}
	fmt.Printf("porcupine: %s: %d ops (%d of unknown outcome) checked in %.3f s\n",
		map[porcupine.CheckResult]string{
			porcupine.Ok: "linearizable", porcupine.Illegal: "NOT linearizable",
			porcupine.Unknown: "inconclusive (timed out)",
		}[res], len(history), unknown, elapsed.Seconds())
	switch res {
	case porcupine.Ok:
		os.Exit(0)
	case porcupine.Illegal:
		os.Exit(1)
	default:
		os.Exit(2)
	}
}
