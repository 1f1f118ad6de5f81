package serverapi_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAPIKeyCompareShape holds the package's source to the shape that
// makes the API key check constant-time (docs/security.md, "Whoever
// reaches the server API"); no test measures time, so this is the test
// that fails when a change breaks the claim the way it would break.
//
// What it proves, by reading every non-test file of the package:
//   - the configured keys are kept only as sha256 digests: the Server's
//     keys field is a slice of [sha256.Size]byte, filled only in New, by
//     sha256.Sum256 of each Config.Keys entry, and Config.Keys is read
//     nowhere else but Config.Validate (lengths only);
//   - the Authorization header is read only in authorized, and the key
//     taken from it (after the public "apikey " prefix) is used only as
//     the input of sha256.Sum256;
//   - that digest and the stored digests are used only as the arguments
//     of subtle.ConstantTimeCompare (fixed 32-byte operands: neither a
//     key's prefix nor its length decides where the comparison stops), in
//     a loop over every key with no return, break or goto (which key
//     matched does not change how many are compared), OR-ed into one
//     result that is tested once, after the loop;
//   - no ==, !=, bytes.Equal, strings.Compare/EqualFold/HasPrefix or
//     switch touches the key, its digest or the stored digests;
//   - serve calls authorized before anything else.
//
// What it does not prove: that subtle.ConstantTimeCompare and sha256 are
// constant-time on this platform (the standard library's promise; sha256
// takes time by the offered key's length, which the caller knows), or
// anything about code outside this package (the keys reach it from
// internal/config and are compared nowhere else: only this package reads
// them).
func TestAPIKeyCompareShape(t *testing.T) {
	fset := token.NewFileSet()
	var files []*ast.File
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, p, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	funcs := map[string]*ast.FuncDecl{}
	for _, f := range files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok {
				funcs[fd.Name.Name] = fd
			}
		}
	}
	auth := funcs["authorized"]
	if auth == nil {
		t.Fatal("no func authorized: the key check moved; this test must follow it")
	}
	at := func(n ast.Node) string { return fset.Position(n.Pos()).String() }

	// The stored keys: [][sha256.Size]byte.
	checkKeysField(t, files, at)

	// Where the keys, the header and the digests are used, function by
	// function.
	for _, f := range files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			name := fd.Name.Name
			parents := parentMap(fd)
			ast.Inspect(fd, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.SelectorExpr:
					switch n.Sel.Name {
					case "keys":
						checkStoredKeysUse(t, name, n, parents, at)
					case "Keys":
						if name != "New" && name != "Validate" {
							t.Errorf("%s: %s reads Config.Keys; only New (to hash them) and Validate may", at(n), name)
						}
						if name == "New" && !isRangeOf(n, parents) {
							t.Errorf("%s: New uses Config.Keys other than to range over them (and hash each)", at(n))
						}
					}
				case *ast.BasicLit:
					if n.Kind == token.STRING && strings.EqualFold(strings.Trim(n.Value, "`\""), "Authorization") && name != "authorized" {
						if _, ok := parents[n].(*ast.CallExpr); ok {
							t.Errorf("%s: %s reads the Authorization header; only authorized may", at(n), name)
						}
					}
				}
				return true
			})
		}
	}
	checkAuthorized(t, auth, at)
	if serve := funcs["serve"]; serve == nil || !firstStmtCalls(serve, "authorized") {
		t.Errorf("serve does not call authorized first: the key would not guard every method")
	}
}

// checkKeysField: the Server struct's keys field is [][sha256.Size]byte.
func checkKeysField(t *testing.T, files []*ast.File, at func(ast.Node) string) {
	t.Helper()
	found := false
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok || ts.Name.Name != "Server" {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return false
			}
			for _, fl := range st.Fields.List {
				for _, nm := range fl.Names {
					if nm.Name != "keys" {
						continue
					}
					found = true
					outer, ok := fl.Type.(*ast.ArrayType)
					inner, ok2 := ast.Expr(nil), false
					if ok && outer.Len == nil {
						var in *ast.ArrayType
						in, ok2 = outer.Elt.(*ast.ArrayType)
						if ok2 {
							inner = in.Len
						}
					}
					if !ok2 || !isSel(inner, "sha256", "Size") || !isIdent(eltOf(fl.Type), "byte") {
						t.Errorf("%s: Server.keys is not [][sha256.Size]byte: the keys would not be compared as fixed-length digests", at(fl))
					}
				}
			}
			return false
		})
	}
	if !found {
		t.Error("no Server.keys field: the stored keys moved; this test must follow them")
	}
}

func eltOf(e ast.Expr) ast.Expr {
	for {
		a, ok := e.(*ast.ArrayType)
		if !ok {
			return e
		}
		e = a.Elt
	}
}

// checkStoredKeysUse: s.keys is appended sha256.Sum256 digests in New, and
// in authorized ranged over and indexed only into ConstantTimeCompare.
func checkStoredKeysUse(t *testing.T, fn string, sel *ast.SelectorExpr, parents map[ast.Node]ast.Node, at func(ast.Node) string) {
	t.Helper()
	switch fn {
	case "New":
		// s.keys = append(s.keys, sha256.Sum256(...))
		switch p := parents[sel].(type) {
		case *ast.AssignStmt:
			call, ok := p.Rhs[0].(*ast.CallExpr)
			if len(p.Rhs) != 1 || !ok || !isIdent(call.Fun, "append") || len(call.Args) != 2 || !isCallOf(call.Args[1], "sha256", "Sum256") {
				t.Errorf("%s: New stores something other than sha256.Sum256 of a key in s.keys", at(sel))
			}
		case *ast.CallExpr:
			if !isIdent(p.Fun, "append") {
				t.Errorf("%s: New passes s.keys to something other than append", at(sel))
			}
		default:
			t.Errorf("%s: New uses s.keys other than to append digests", at(sel))
		}
	case "authorized":
		if isRangeOf(sel, parents) {
			return
		}
		if !insideCallOf(sel, parents, "subtle", "ConstantTimeCompare") {
			t.Errorf("%s: authorized uses the stored digests outside subtle.ConstantTimeCompare", at(sel))
		}
	default:
		t.Errorf("%s: %s uses the stored keys; only New and authorized may", at(sel), fn)
	}
}

// checkAuthorized: the offered key goes only into sha256.Sum256, the
// digest only into ConstantTimeCompare, over every key without early
// exit, and nothing compares them otherwise.
func checkAuthorized(t *testing.T, fd *ast.FuncDecl, at func(ast.Node) string) {
	t.Helper()
	parents := parentMap(fd)
	// The names bound to the offered key and to its digest.
	var keyVar, sumVar string
	compares := 0
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if !ok || len(as.Rhs) != 1 {
			return true
		}
		switch {
		case isCallOf(as.Rhs[0], "strings", "CutPrefix"):
			keyVar = identName(as.Lhs[0])
		case isCallOf(as.Rhs[0], "sha256", "Sum256"):
			sumVar = identName(as.Lhs[0])
		}
		return true
	})
	if keyVar == "" || sumVar == "" {
		t.Fatalf("authorized: no key taken with strings.CutPrefix (%q) or no digest of it with sha256.Sum256 (%q)", keyVar, sumVar)
	}
	secret := func(e ast.Node) bool { // mentions the key, its digest or the stored digests
		hit := false
		ast.Inspect(e, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.Ident:
				hit = hit || n.Name == keyVar || n.Name == sumVar
			case *ast.SelectorExpr:
				hit = hit || n.Sel.Name == "keys"
			}
			return !hit
		})
		return hit
	}
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.Ident:
			switch n.Name {
			case keyVar:
				if isDecl(n, parents) {
					return true
				}
				conv, ok := parents[n].(*ast.CallExpr) // []byte(key)
				if !ok || !isCallOf(parents[conv], "sha256", "Sum256") {
					t.Errorf("%s: the offered key is used other than as the input of sha256.Sum256", at(n))
				}
			case sumVar:
				if isDecl(n, parents) {
					return true
				}
				if !insideCallOf(n, parents, "subtle", "ConstantTimeCompare") {
					t.Errorf("%s: the offered key's digest is used outside subtle.ConstantTimeCompare", at(n))
				}
			}
		case *ast.CallExpr:
			if isCallOf(n, "subtle", "ConstantTimeCompare") {
				compares++
				if len(n.Args) != 2 || !isFullSlice(n.Args[0]) || !isFullSlice(n.Args[1]) {
					t.Errorf("%s: ConstantTimeCompare not on two whole digests (x[:])", at(n))
				}
				if !inLoop(n, parents) {
					t.Errorf("%s: ConstantTimeCompare not in the loop over the keys", at(n))
				}
				return true
			}
			for _, a := range n.Args {
				if secret(a) && !isCallOf(n, "sha256", "Sum256") && !isConversion(n) && !isIdent(n.Fun, "range") {
					t.Errorf("%s: %s is passed the key or a digest", at(n), exprName(n.Fun))
				}
			}
		case *ast.BinaryExpr:
			if (n.Op == token.EQL || n.Op == token.NEQ || n.Op == token.LSS || n.Op == token.GTR) && (secret(n.X) || secret(n.Y)) {
				t.Errorf("%s: %s compares the key or a digest", at(n), n.Op)
			}
		case *ast.SwitchStmt:
			if n.Tag != nil && secret(n.Tag) {
				t.Errorf("%s: a switch on the key or a digest", at(n))
			}
		case *ast.RangeStmt:
			if secret(n.X) {
				ast.Inspect(n.Body, func(m ast.Node) bool {
					switch m := m.(type) {
					case *ast.ReturnStmt:
						t.Errorf("%s: return inside the loop over the keys: the number compared depends on which matched", at(m))
					case *ast.BranchStmt:
						if m.Tok == token.BREAK || m.Tok == token.GOTO {
							t.Errorf("%s: %s inside the loop over the keys: the number compared depends on which matched", at(m), m.Tok)
						}
					case *ast.IfStmt:
						t.Errorf("%s: a branch inside the loop over the keys", at(m))
					}
					return true
				})
			}
		}
		return true
	})
	if compares != 1 {
		t.Errorf("authorized calls subtle.ConstantTimeCompare %d times, want once (in the loop over the keys)", compares)
	}
}

// parentMap maps every node under root to its parent.
func parentMap(root ast.Node) map[ast.Node]ast.Node {
	parents := map[ast.Node]ast.Node{}
	var stack []ast.Node
	ast.Inspect(root, func(n ast.Node) bool {
		if n == nil {
			stack = stack[:len(stack)-1]
			return false
		}
		if len(stack) > 0 {
			parents[n] = stack[len(stack)-1]
		}
		stack = append(stack, n)
		return true
	})
	return parents
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

func identName(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

func isSel(e ast.Expr, pkg, name string) bool {
	s, ok := e.(*ast.SelectorExpr)
	return ok && isIdent(s.X, pkg) && s.Sel.Name == name
}

func isCallOf(n ast.Node, pkg, name string) bool {
	c, ok := n.(*ast.CallExpr)
	return ok && isSel(c.Fun, pkg, name)
}

// isConversion: []byte(x).
func isConversion(c *ast.CallExpr) bool {
	a, ok := c.Fun.(*ast.ArrayType)
	return ok && a.Len == nil && isIdent(a.Elt, "byte")
}

func exprName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprName(e.X) + "." + e.Sel.Name
	}
	return "a call"
}

// isFullSlice: x[:] of a digest (an identifier or an indexed s.keys).
func isFullSlice(e ast.Expr) bool {
	s, ok := e.(*ast.SliceExpr)
	return ok && s.Low == nil && s.High == nil && s.Max == nil
}

// isDecl: n is on the left of the := that declares it.
func isDecl(n *ast.Ident, parents map[ast.Node]ast.Node) bool {
	as, ok := parents[n].(*ast.AssignStmt)
	if !ok || as.Tok != token.DEFINE {
		return false
	}
	for _, l := range as.Lhs {
		if l == n {
			return true
		}
	}
	return false
}

func isRangeOf(e ast.Expr, parents map[ast.Node]ast.Node) bool {
	r, ok := parents[e].(*ast.RangeStmt)
	return ok && r.X == e
}

// insideCallOf: n is (part of) an argument of a call to pkg.name.
func insideCallOf(n ast.Node, parents map[ast.Node]ast.Node, pkg, name string) bool {
	for p := parents[n]; p != nil; p = parents[p] {
		if isCallOf(p, pkg, name) {
			return true
		}
		switch p.(type) {
		case *ast.SliceExpr, *ast.IndexExpr:
			continue
		}
		return false
	}
	return false
}

// inLoop: n is inside a range statement.
func inLoop(n ast.Node, parents map[ast.Node]ast.Node) bool {
	for p := parents[n]; p != nil; p = parents[p] {
		if _, ok := p.(*ast.RangeStmt); ok {
			return true
		}
	}
	return false
}

// firstStmtCalls: fd's first statement is an if whose condition calls
// s.<name>.
func firstStmtCalls(fd *ast.FuncDecl, name string) bool {
	if fd.Body == nil || len(fd.Body.List) == 0 {
		return false
	}
	ifs, ok := fd.Body.List[0].(*ast.IfStmt)
	if !ok {
		return false
	}
	found := false
	ast.Inspect(ifs.Cond, func(n ast.Node) bool {
		if c, ok := n.(*ast.CallExpr); ok {
			if s, ok := c.Fun.(*ast.SelectorExpr); ok && s.Sel.Name == name {
				found = true
			}
		}
		return !found
	})
	return found
}
