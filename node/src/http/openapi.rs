//! The OpenAPI 3.1 document served at `/api/v1/openapi.json` (hand-written).

use serde_json::{Value, json};

fn p(name: &str, loc: &str, desc: &str, schema: Value) -> Value {
    json!({"name": name, "in": loc, "description": desc, "required": loc == "path", "schema": schema})
}

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(desc: &str, schema: Value) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": schema}}})
}

pub fn document() -> Value {
    let path = p(
        "path",
        "path",
        "Item path below the root, e.g. sites/acme/home",
        json!({"type": "string"}),
    );
    let ws = p(
        "workspace",
        "query",
        "authoring (default) or live",
        json!({"type": "string", "enum": ["authoring", "live"]}),
    );
    let recursive = p(
        "recursive",
        "query",
        "Apply to the whole subtree",
        json!({"type": "boolean"}),
    );
    let if_match = p(
        "If-Match",
        "header",
        "ETag (version) the item must have; 409 otherwise",
        json!({"type": "string"}),
    );
    let item = json!({"$ref": "#/components/schemas/Item"});
    let common = json!({
        "400": err("Invalid path, query, JSON body or precondition"),
        "401": err("Missing or invalid bearer token"),
        "403": err("The token lacks the needed role"),
    });
    let with = |extra: Value| -> Value {
        let mut m = common.clone();
        if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        m
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Studio content API", "version": "v1",
                 "description": "Content repository API of studio-node. Content routes need `Authorization: Bearer <JWT>` (HS256; claims `sub`, `roles`: reader, editor, admin). Errors are `{\"error\": code, \"message\": text}`."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"],
                          "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
                "ItemInput": {"type": "object", "required": ["type"], "additionalProperties": false,
                              "properties": {"type": {"type": "string", "maxLength": 128},
                                             "properties": {"type": "object", "description": "JSON properties; a binary is referenced as {\"$binary\": \"<sha256>\"}"}}},
                "Item": {"type": "object", "properties": {
                    "id": {"type": "string"}, "path": {"type": "string"}, "workspace": {"type": "string"},
                    "type": {"type": "string"}, "properties": {"type": "object"}, "version": {"type": "integer"},
                    "created": {"type": "integer", "description": "unix ms"}, "modified": {"type": "integer"},
                    "author": {"type": "string"}}},
                "Version": {"type": "object", "properties": {
                    "version": {"type": "integer"}, "path": {"type": "string"}, "type": {"type": "string"},
                    "properties": {"type": "object"}, "time": {"type": "integer"}, "author": {"type": "string"},
                    "seq": {"type": "integer"}}},
                "Binary": {"type": "object", "properties": {"sha256": {"type": "string"}, "size": {"type": "integer"}, "ref": {"type": "object"}}}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/content/{path}": {
                "get": {"summary": "Read an item (or an old version with ?version=N)", "parameters": [path, ws, p("version", "query", "Old version to read", json!({"type": "integer"}))],
                        "responses": with(json!({"200": ok("The item; ETag is its version", item.clone()), "404": err("No such item")}))},
                "put": {"summary": "Create or replace an item (authoring)", "parameters": [path, if_match, p("If-None-Match", "header", "* = create only", json!({"type": "string"}))],
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ItemInput"}}}},
                        "responses": with(json!({"200": ok("Replaced", item.clone()), "201": ok("Created", item.clone()), "409": err("Version conflict"), "413": err("Body too large"), "415": err("Not JSON"), "503": err("Not the primary")}))},
                "delete": {"summary": "Delete an item (recursive: its subtree); workspace=live unpublishes", "parameters": [path, ws, recursive, if_match],
                           "responses": with(json!({"200": ok("Deleted", json!({"type": "object"})), "404": err("No such item"), "409": err("Conflict or has children")}))}
            },
            "/api/v1/children/{path}": {"get": {"summary": "List children, ordered by path, paged", "parameters": [path, ws, p("offset", "query", "", json!({"type": "integer"})), p("limit", "query", "1..=1000", json!({"type": "integer"}))],
                                                 "responses": with(json!({"200": ok("A page of children", json!({"type": "object"}))}))}},
            "/api/v1/children": {"get": {"summary": "List top-level items", "parameters": [ws], "responses": with(json!({"200": ok("A page", json!({"type": "object"}))}))}},
            "/api/v1/versions/{path}": {"get": {"summary": "Version history, newest first", "parameters": [path],
                                                 "responses": with(json!({"200": ok("Versions", json!({"type": "object", "properties": {"versions": {"type": "array", "items": {"$ref": "#/components/schemas/Version"}}}})), "404": err("No such item")}))}},
            "/api/v1/restore/{path}": {"post": {"summary": "Restore an old version as the new current version", "parameters": [path, if_match],
                                                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["version"], "properties": {"version": {"type": "integer"}}}}}},
                                                "responses": with(json!({"200": ok("Restored", item.clone()), "404": err("No such item or version"), "409": err("Version conflict")}))}},
            "/api/v1/move": {"post": {"summary": "Move/rename an item and its subtree", "parameters": [if_match],
                                      "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["from", "to"], "properties": {"from": {"type": "string"}, "to": {"type": "string"}}}}}},
                                      "responses": with(json!({"200": ok("Moved", item.clone()), "404": err("No such item"), "409": err("Target exists or version conflict")}))}},
            "/api/v1/publish/{path}": {"post": {"summary": "Copy an item (recursive: subtree) from authoring to live", "parameters": [path, recursive], "responses": with(json!({"200": ok("Published", json!({"type": "object"})), "404": err("No such item")}))}},
            "/api/v1/unpublish/{path}": {"post": {"summary": "Remove an item (recursive: subtree) from live", "parameters": [path, recursive], "responses": with(json!({"200": ok("Unpublished", json!({"type": "object"})), "404": err("Not published")}))}},
            "/api/v1/search": {"get": {"summary": "Full-text search over text properties", "parameters": [p("q", "query", "Words (all must match)", json!({"type": "string"})), p("path", "query", "Path prefix", json!({"type": "string"})), p("type", "query", "Item type", json!({"type": "string"})), ws, p("limit", "query", "1..=1000", json!({"type": "integer"}))],
                                       "responses": with(json!({"200": ok("Hits", json!({"type": "object"}))}))}},
            "/api/v1/binaries": {"post": {"summary": "Upload a binary (streamed, size-limited, deduplicated by sha256)", "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                                          "responses": with(json!({"201": ok("Stored", json!({"$ref": "#/components/schemas/Binary"})), "200": ok("Already stored", json!({"$ref": "#/components/schemas/Binary"})), "413": err("Too large")}))}},
            "/api/v1/binaries/{sha256}": {"get": {"summary": "Download a binary (Range supported)", "parameters": [p("sha256", "path", "", json!({"type": "string"})), p("Range", "header", "bytes=a-b", json!({"type": "string"}))],
                                                  "responses": with(json!({"200": {"description": "The bytes"}, "206": {"description": "A range"}, "404": err("Unknown binary"), "416": err("Range not satisfiable")}))}},
            "/api/v1/cluster/status": {"get": {"summary": "This node's view of the cluster (reader role, or a member/operator credential)", "responses": {"200": {"description": "Status"}, "401": {"description": "No or invalid credentials"}, "403": {"description": "The token lacks the reader role"}}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness (can serve its role)", "security": [], "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "metrics"}}}}
        }
    })
}
