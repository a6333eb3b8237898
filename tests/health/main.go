// studio-health prints how GitOps tools judge a StudioCluster object: the result of
// the kstatus library (sigs.k8s.io/cli-utils/pkg/kstatus, which Flux, kpt and
// `kubectl wait`-style tooling use) and the Argo CD health from the Lua check shipped
// in deploy/argocd/studiocluster-health.lua, run with gopher-lua the way Argo CD runs
// resource.customizations.health scripts (the object as the global `obj`, the value
// the script returns as the verdict).
//
// Usage: studio-health <health.lua> < object.json
// Prints: {"kstatus":"Current","kstatusMessage":"...","argo":"Healthy","argoMessage":"..."}
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case int64:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []interface{}:
		t := L.NewTable()
		for _, e := range x {
			t.Append(toLua(L, e))
		}
		return t
	case map[string]interface{}:
		t := L.NewTable()
		for k, e := range x {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	}
	return lua.LString(fmt.Sprint(v))
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "studio-health: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: studio-health <health.lua> < object.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading the object: %v", err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		fail("the object is not a Kubernetes object: %v", err)
	}
	res, err := status.Compute(u)
	if err != nil {
		fail("kstatus: %v", err)
	}
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, u.Object))
	if err := L.DoString(string(script)); err != nil {
		fail("the health script failed: %v", err)
	}
	verdict, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		fail("the health script returned %v, not a table", L.Get(-1))
	}
	out := map[string]string{
		"kstatus":        res.Status.String(),
		"kstatusMessage": res.Message,
		"argo":           verdict.RawGetString("status").String(),
		"argoMessage":    verdict.RawGetString("message").String(),
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("%v", err)
	}
}
