"""The native dialect (socket ``keyferry``): one class, any mix of backends.

```yaml
parameters:
  objects: |
    - backend: local              # local | aws | gcp | azure
      name: db/credentials.json   # backend-specific locator keys
      path: db/credentials.json   # output file (default: from the locator)
      mode: "0640"                # optional; default: the driver's permission (0644)
      decode: base64              # optional: utf-8 | base64 | hex
      optional: true              # optional: a missing object is skipped, not an error
      id: db-credentials          # optional ObjectVersion id (default: the path)
      extract:                    # optional extra files taken from a JSON/YAML document
        - path: db/username
          jmesPath: username      # or jsonKey: / yamlKey:
          mode: "0600"
      write: false                # optional: only templates read the outputs
    - template: |                 # a file rendered from the outputs above (templates.py)
        USER={{ values["db/username"] | shellquote }}
      path: app.env
```

Backend-specific keys come from the backend's dialect hook (``NATIVE_KEYS`` and
``native_ref`` in ``provider.clouds.<backend>.dialect``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from . import history, registry
from .dialect import (
    TextScalarLoader,
    check_keys,
    collect,
    get_str,
    load_yaml,
    output_problems,
    parse_bool,
    parse_mode,
    require_list,
)
from .errors import FailedPrecondition, InvalidArgument, KeyferryError, did_you_mean
from .files import check_path
from .model import Decoding, Extraction, Mount, ObjectSpec, Output, Plan, TemplateSpec

if TYPE_CHECKING:
    from . import templates

PARAMETERS = ("objects",)
COMMON_KEYS = (
    "backend",
    "path",
    "mode",
    "decode",
    "optional",
    "id",
    "extract",
    "select",
    "maxMatches",
    "write",
)
EXTRACT_KEYS = ("path", "mode", "decode", "jmesPath", "jsonKey", "yamlKey", "write")
DECODINGS: tuple[Decoding, ...] = ("utf-8", "base64", "hex")
EXAMPLE = "'- backend: local\\n  name: db/password\\n  path: db-password'"


class NativeHook(Protocol):
    NATIVE_KEYS: tuple[str, ...]

    def native_ref(
        self, fields: Mapping[str, Any], where: str, mount: Mount
    ) -> tuple[Hashable, str]:
        """Return (ref, default output path) for the backend-specific ``fields``."""
        ...


def _hook(backend: str, where: str) -> NativeHook:
    module = registry.import_part(backend, "dialect", where)
    if not hasattr(module, "native_ref"):
        raise FailedPrecondition(f"{where}: backend '{backend}' has no native-dialect support yet")
    return cast(NativeHook, module)


def parse(mount: Mount) -> Plan:
    params = check_keys(mount.parameters, PARAMETERS, "SecretProviderClass parameters")
    text = params.get("objects")
    if text is None:
        raise InvalidArgument(
            "parameter 'objects' is missing; list the objects to mount, e.g. " + EXAMPLE
        )
    items = require_list("objects", load_yaml("objects", text, loader=TextScalarLoader), EXAMPLE)
    specs: list[ObjectSpec] = []
    rendered: list[templates.Parsed] = []  # template objects: see provider/templates.py
    errors: list[KeyferryError] = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, Mapping) and "template" in item:
                from . import templates  # Jinja2 is loaded by the first class that has one

                rendered.append(templates.parse_object(i, item))
            else:
                specs.extend(history.expand(_object(i, item, mount)))
        except KeyferryError as exc:
            errors.append(exc)
    outputs = [(s.label, o) for s in specs for o in s.outputs]
    outputs += [(t.label, Output(path=t.path, mode=t.mode)) for t in rendered]
    errors.extend(output_problems(outputs))
    errors.extend(history.id_clashes(specs))
    linked: tuple[TemplateSpec, ...] = ()
    if not errors and (rendered or any(not o.write for s in specs for o in s.outputs)):
        from . import templates

        linked, problems = templates.link(rendered, specs)
        errors.extend(problems)
    collect(errors, "invalid 'objects' parameter")
    return Plan(dialect="native", objects=tuple(specs), templates=linked)


def _decoding(value: Any, where: str) -> Decoding | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "utf8":
        text = "utf-8"
    if text not in DECODINGS:
        raise InvalidArgument(
            f"{where}: decode {value!r} is not supported{did_you_mean(text, DECODINGS)}"
        )
    return text


def _object(index: int, item: Any, mount: Mount) -> ObjectSpec:
    where = f"objects[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidArgument(
            f"{where}: each object must be a mapping with at least 'backend', got a "
            f"{type(item).__name__}"
        )
    backend = get_str(item, "backend", where, required=True).strip()
    hook = _hook(backend, where)
    fields = check_keys(item, (*COMMON_KEYS, *hook.NATIVE_KEYS), where)
    if "select" in fields:  # many objects under one directory
        from .selection import native_object

        if "write" in fields:  # templates name their inputs when the class is parsed
            raise InvalidArgument(
                f"{where}: 'write' does not apply to 'select': templates read the files of "
                "objects mounted by 'name', not a selection's"
            )

        return native_object(where, backend, fields, mount, _decoding)
    if "maxMatches" in fields:
        raise InvalidArgument(f"{where}: 'maxMatches' applies only to objects with 'select'")
    ref, default_path = hook.native_ref(
        {k: v for k, v in fields.items() if k in hook.NATIVE_KEYS}, where, mount
    )
    label = f"{where} ({backend}: {default_path})" if default_path else where
    mode = parse_mode(fields["mode"], f"{label} mode") if "mode" in fields else None
    decode = _decoding(fields.get("decode"), label)
    outputs: list[Output] = []
    extracts = fields.get("extract")
    path = get_str(fields, "path", label)
    if not path and not extracts:
        path = default_path
        if not path:
            raise InvalidArgument(f"{label}: 'path' is required (the output file name)")
    write = parse_bool(fields.get("write", True), f"{label} write")
    if path:
        check_path(path, f"{label} path")
        outputs.append(Output(path=path, mode=mode, decode=decode, write=write))
    if extracts is not None:
        if not isinstance(extracts, list) or not extracts:
            raise InvalidArgument(
                f"{label}: 'extract' must be a non-empty list of {{path, jmesPath|jsonKey|yamlKey}}"
            )
        for j, ex in enumerate(extracts):
            outputs.append(_extract(ex, f"{label} extract[{j}]", mode, write))
    optional = parse_bool(fields.get("optional", False), f"{label} optional")
    object_id = get_str(fields, "id", label) or (path or outputs[0].path)
    return ObjectSpec(
        label=label,
        backend=backend,
        ref=ref,
        outputs=tuple(outputs),
        ids=(object_id,),
        optional=optional,
    )


def _extract(item: Any, where: str, parent_mode: int | None, parent_write: bool) -> Output:
    if not isinstance(item, Mapping):
        raise InvalidArgument(
            f"{where}: must be a mapping with 'path' and one of jmesPath/jsonKey/yamlKey"
        )
    fields = check_keys(item, EXTRACT_KEYS, where)
    path = get_str(fields, "path", where, required=True)
    check_path(path, f"{where} path")
    kinds = [k for k in ("jmesPath", "jsonKey", "yamlKey") if k in fields]
    if len(kinds) != 1:
        raise InvalidArgument(
            f"{where}: give exactly one of 'jmesPath', 'jsonKey' or 'yamlKey' (found {len(kinds)})"
        )
    kind = {"jmesPath": "jmespath", "jsonKey": "json_key", "yamlKey": "yaml_key"}[kinds[0]]
    expression = get_str(fields, kinds[0], where, required=True)
    mode = parse_mode(fields["mode"], f"{where} mode") if "mode" in fields else parent_mode
    extraction = Extraction(kind=cast(Any, kind), expression=expression)
    if kind == "jmespath":
        from .render import compile_jmespath

        compile_jmespath(expression, where)
    write = parse_bool(fields["write"], f"{where} write") if "write" in fields else parent_write
    return Output(
        path=path,
        mode=mode,
        extract=extraction,
        decode=_decoding(fields.get("decode"), where),
        write=write,
    )
