// The API reference page: fetches this gateway's openapi.json and renders it.
// Self-contained on purpose: no framework, no requests to any other origin, and every
// text from the document goes into the page as text (never as HTML).
"use strict";

(function () {
  const METHODS = ["get", "post", "put", "patch", "delete"];
  let doc = null;

  // -- small DOM helpers --------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // Descriptions use `code` spans only; render those, everything else as plain text.
  function prose(text, tag) {
    const node = el(tag || "p");
    String(text || "").split(/(`[^`]+`)/).forEach((part) => {
      if (part.startsWith("`") && part.endsWith("`") && part.length > 1) {
        node.append(el("code", {}, part.slice(1, -1)));
      } else if (part) {
        node.append(part);
      }
    });
    return node;
  }

  function json(value) {
    return el("pre", {}, JSON.stringify(value, null, 2));
  }

  // -- $ref resolution ------------------------------------------------------------------

  function lookup(ref) {
    if (!ref.startsWith("#/")) return {};
    return ref
      .slice(2)
      .split("/")
      .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"))
      .reduce((node, key) => (node && typeof node === "object" ? node[key] : undefined), doc) || {};
  }

  function deref(node) {
    let seen = 0;
    while (node && node.$ref && seen++ < 20) node = lookup(node.$ref);
    return node || {};
  }

  function refName(ref) {
    return ref.split("/").pop();
  }

  // -- schemas ------------------------------------------------------------------------

  function typeLabel(schema) {
    if (!schema || typeof schema !== "object") return "any";
    if (schema.$ref) return refName(schema.$ref);
    if ("const" in schema) return "const " + JSON.stringify(schema.const);
    if (schema.allOf) return schema.allOf.map(typeLabel).join(" & ");
    if (schema.anyOf && !schema.type) return schema.anyOf.map(typeLabel).join(" | ");
    if (schema.oneOf) return schema.oneOf.map(typeLabel).join(" | ");
    let type = schema.type || (schema.properties ? "object" : schema.enum ? "enum" : "any");
    if (Array.isArray(type)) type = type.join(" | ");
    if (schema.type === "array" || (Array.isArray(schema.type) && schema.items)) {
      return type.replace("array", "array of " + typeLabel(schema.items || {}));
    }
    return schema.format ? type + " (" + schema.format + ")" : type;
  }

  function constraints(schema) {
    const out = [];
    const add = (label, value) =>
      out.push(el("span", { class: "constraint" }, label + " ", el("code", {}, value)));
    if (!schema || typeof schema !== "object") return out;
    if (schema.enum) add("one of", schema.enum.map((v) => JSON.stringify(v)).join(", "));
    if ("minLength" in schema) add("min length", schema.minLength);
    if ("maxLength" in schema) add("max length", schema.maxLength);
    if ("minimum" in schema) add("min", schema.minimum);
    if ("maximum" in schema) add("max", schema.maximum);
    if ("minItems" in schema) add("min items", schema.minItems);
    if (schema.pattern) add("pattern", schema.pattern);
    if ("default" in schema) add("default", JSON.stringify(schema.default));
    if (schema.examples) add("e.g.", schema.examples.map((v) => JSON.stringify(v)).join(", "));
    if (schema.contentMediaType) add("content", schema.contentMediaType);
    return out;
  }

  function refLink(ref) {
    return el("a", { href: "#schema-" + refName(ref) }, refName(ref));
  }

  // A schema as a table of its properties (objects) or a one-line description.
  function schemaView(schema, depth) {
    depth = depth || 0;
    const box = el("div", { class: depth ? "schema-nested" : "schema" });
    if (!schema || typeof schema !== "object") return box;
    if (schema.$ref) {
      const target = deref(schema);
      box.append(el("p", {}, "Schema ", refLink(schema.$ref)));
      if (depth < 1) box.append(schemaView(target, depth + 1));
      return box;
    }
    if (schema.description && depth === 0) box.append(prose(schema.description));
    if (schema.allOf) {
      box.append(el("p", { class: "muted" }, "All of:"));
      schema.allOf.forEach((part) => box.append(schemaView(part, depth + 1)));
    }
    for (const key of ["anyOf", "oneOf"]) {
      if (!schema[key]) continue;
      const parts = schema[key].map((part) =>
        part.required && Object.keys(part).length === 1
          ? el("code", {}, part.required.join(", "))
          : typeLabel(part),
      );
      const line = el("p", { class: "muted" }, key === "anyOf" ? "At least one of: " : "One of: ");
      parts.forEach((part, i) => line.append(i ? ", " : "", part));
      box.append(line);
    }
    if (schema.properties) {
      const required = new Set(schema.required || []);
      const rows = Object.entries(schema.properties).map(([name, prop]) => {
        const nested = deref(prop);
        const typeCell = el(
          "td",
          {},
          prop.$ref ? refLink(prop.$ref) : el("span", { class: "type" }, typeLabel(prop)),
        );
        const about = el("td", {}, prop.description ? prose(prop.description, "div") : null, constraints(prop));
        if (!prop.$ref && (nested.properties || (nested.items && deref(nested.items).properties))) {
          about.append(schemaView(nested.properties ? nested : nested.items, depth + 1));
        }
        return el(
          "tr",
          {},
          el("td", { class: "name mono" }, name, required.has(name) ? el("span", { class: "req" }, "required") : null),
          typeCell,
          about,
        );
      });
      box.append(el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "about")), rows));
      if (schema.additionalProperties === false) box.append(el("p", { class: "muted" }, "No other fields."));
    } else if (!schema.allOf && !schema.anyOf && !schema.oneOf) {
      box.append(el("p", {}, el("span", { class: "type" }, typeLabel(schema)), " ", constraints(schema)));
    }
    return box;
  }

  // -- operations ---------------------------------------------------------------------

  function securityView(security) {
    if (!security || !security.length) return el("p", {}, "Authentication: none.");
    const schemes = (doc.components && doc.components.securitySchemes) || {};
    const line = el("p", {}, "Authentication: ");
    security.forEach((requirement, i) => {
      Object.keys(requirement).forEach((name) => {
        const scheme = schemes[name] || {};
        const how =
          scheme.type === "http"
            ? "Authorization: Bearer <" + name + ">"
            : scheme.in === "header"
              ? scheme.name + ": <" + name + ">"
              : name;
        line.append(i ? " or " : "", el("a", { href: "#security" }, el("code", {}, how)));
      });
    });
    return line;
  }

  function parametersView(parameters) {
    const list = (parameters || []).map(deref);
    if (!list.length) return null;
    const rows = list.map((p) =>
      el(
        "tr",
        {},
        el("td", { class: "name mono" }, p.name, p.required ? el("span", { class: "req" }, "required") : null),
        el("td", {}, p.in),
        el("td", {}, el("span", { class: "type" }, typeLabel(p.schema)), " ", constraints(p.schema)),
        el("td", {}, p.description ? prose(p.description, "div") : null),
      ),
    );
    return [
      el("h4", {}, "Parameters"),
      el("table", {}, el("tr", {}, ["name", "in", "type", "about"].map((h) => el("th", {}, h))), rows),
    ];
  }

  function contentView(content) {
    const out = [];
    for (const [mediaType, media] of Object.entries(content || {})) {
      out.push(el("p", { class: "muted" }, el("span", { class: "badge" }, mediaType)));
      if (media.schema) out.push(schemaView(media.schema));
      if ("example" in media) {
        out.push(el("details", { open: "" }, el("summary", {}, "Example"), json(media.example)));
      }
      for (const [name, example] of Object.entries(media.examples || {})) {
        const value = deref(example);
        out.push(el("details", {}, el("summary", {}, "Example: " + (value.summary || name)), json(value.value)));
      }
    }
    return out;
  }

  function responseView(status, response) {
    const resolved = deref(response);
    const box = el(
      "div",
      { class: "response" },
      el(
        "p",
        {},
        el("span", { class: "status s" + status[0] }, status),
        " ",
        response.$ref ? el("span", { class: "badge" }, refName(response.$ref)) : null,
        " ",
        prose(resolved.description || "", "span"),
      ),
    );
    const headers = Object.entries(resolved.headers || {});
    if (headers.length) {
      const rows = headers.map(([name, header]) => {
        const h = deref(header);
        return el(
          "tr",
          {},
          el("td", { class: "name mono" }, name),
          el("td", {}, h.description ? prose(h.description, "div") : null, constraints(h.schema), h.example ? el("span", { class: "constraint" }, "e.g. ", el("code", {}, h.example)) : null),
        );
      });
      box.append(el("details", {}, el("summary", {}, "Headers"), el("table", {}, rows)));
    }
    box.append(...contentView(resolved.content));
    return box;
  }

  function operationView(path, method, op) {
    const id = op.operationId || method + path;
    const body = deref(op.requestBody);
    return el(
      "article",
      { class: "op", id: "op-" + id, "data-search": [method, path, op.summary, (op.tags || []).join(" ")].join(" ").toLowerCase() },
      el("h3", {}, el("span", { class: "method " + method }, method), el("span", { class: "path" }, path), el("span", { class: "summary" }, op.summary || "")),
      op.description ? prose(op.description) : null,
      securityView(op.security),
      parametersView(op.parameters),
      op.requestBody ? [el("h4", {}, "Request body", body.required ? el("span", { class: "req" }, "required") : el("span", { class: "muted" }, " (optional)")), contentView(body.content)] : null,
      el("h4", {}, "Responses"),
      Object.entries(op.responses || {}).map(([status, response]) => responseView(status, response)),
    );
  }

  // -- the page -----------------------------------------------------------------------

  function render() {
    const main = document.getElementById("main");
    const nav = document.getElementById("nav");
    main.replaceChildren();
    const info = doc.info || {};
    document.title = (info.title || "API") + " " + (info.version || "") + " reference";
    document.getElementById("title").textContent = (info.title || "API") + " " + (info.version || "");
    document.getElementById("summary").textContent = info.summary || "";
    if (info.description) main.append(prose(info.description));
    main.append(el("p", {}, "The document: ", el("a", { href: "openapi.json" }, "openapi.json"), " (OpenAPI " + doc.openapi + ")."));

    const byTag = new Map((doc.tags || []).map((t) => [t.name, { tag: t, ops: [] }]));
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of METHODS) {
        if (!item[method]) continue;
        const name = (item[method].tags || ["other"])[0];
        if (!byTag.has(name)) byTag.set(name, { tag: { name }, ops: [] });
        byTag.get(name).ops.push([path, method, item[method]]);
      }
    }
    for (const { tag, ops } of byTag.values()) {
      if (!ops.length) continue;
      nav.append(
        el("h2", {}, tag.name),
        el(
          "ul",
          {},
          ops.map(([path, method, op]) =>
            el("li", { "data-op": "op-" + (op.operationId || method + path) }, el("a", { href: "#op-" + (op.operationId || method + path) }, el("span", { class: "method " + method }, method), el("span", { class: "path" }, path))),
          ),
        ),
      );
      main.append(
        el("section", { class: "tag", id: "tag-" + tag.name }, el("h2", {}, tag.name), tag.description ? prose(tag.description) : null, ops.map(([path, method, op]) => operationView(path, method, op))),
      );
    }

    const components = doc.components || {};
    const schemes = Object.entries(components.securitySchemes || {});
    if (schemes.length) {
      nav.append(el("h2", {}, el("a", { href: "#security" }, "authentication")));
      main.append(
        el(
          "section",
          { class: "tag", id: "security" },
          el("h2", {}, "Authentication"),
          el(
            "table",
            {},
            el("tr", {}, ["name", "how", "about"].map((h) => el("th", {}, h))),
            schemes.map(([name, s]) =>
              el("tr", {}, el("td", { class: "name mono" }, name), el("td", {}, el("code", {}, s.type === "http" ? "Authorization: " + s.scheme + (s.bearerFormat ? " (" + s.bearerFormat + ")" : "") : s.name + " " + s.in)), el("td", {}, prose(s.description || "", "div"))),
            ),
          ),
        ),
      );
    }
    const schemas = Object.entries(components.schemas || {});
    if (schemas.length) {
      nav.append(el("h2", {}, el("a", { href: "#schemas" }, "schemas")));
      main.append(
        el(
          "section",
          { class: "tag", id: "schemas" },
          el("h2", {}, "Schemas"),
          schemas.map(([name, schema]) => el("div", { id: "schema-" + name }, el("h3", { class: "mono" }, name), schemaView(schema))),
        ),
      );
    }
    if (location.hash) {
      const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
      if (target) target.scrollIntoView();
    }
  }

  function applyFilter(text) {
    const needle = text.trim().toLowerCase();
    document.querySelectorAll("article.op").forEach((article) => {
      const hide = needle && !article.dataset.search.includes(needle);
      article.classList.toggle("hidden", Boolean(hide));
      const item = document.querySelector('[data-op="' + article.id + '"]');
      if (item) item.classList.toggle("hidden", Boolean(hide));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("filter").addEventListener("input", (event) => applyFilter(event.target.value));
    fetch("openapi.json", { headers: { Accept: "application/json" } })
      .then((response) => {
        if (!response.ok) throw new Error("openapi.json answered " + response.status);
        return response.json();
      })
      .then((document_) => {
        doc = document_;
        render();
      })
      .catch((error) => {
        document.getElementById("status").textContent = "Could not load openapi.json: " + error.message;
      });
  });
})();
