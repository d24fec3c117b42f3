"""The OpenAPI document is the contract: it is valid, every $ref resolves, every operation documents
the codes it can answer with our error body and the bearer scheme, and every example body is valid
against its schema and, sent to a served demo model, gets the documented answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from flame_core.config import FlameConfig
from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.auth.service import create_api_key
from service.cli.serve import build_demo_model, register_model
from service.db import load_models, make_engine, make_session_factory, session_scope
from service.settings import Settings

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
OPEN = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
KEYED = {401, 403, 500, 503}  # 503: the key is checked against a registry that may be down
# Every code each operation can answer (docs/design.md s6, s10); 413 wherever there is a body.
EXPECTED: dict[tuple[str, str], set[int]] = {
    ("get", "/healthz"): {200, 500},
    ("get", "/readyz"): {200, 500, 503},
    ("get", "/metrics"): {200, 500},
    ("post", "/predict/{task}"): KEYED | {200, 404, 413, 415, 422, 429, 504},
    ("post", "/predict"): KEYED | {200, 413, 415, 422},
    ("post", "/datasets"): KEYED | {201, 413, 422},
    ("get", "/datasets/{dataset_id}"): KEYED | {200, 404, 422},
    ("post", "/tasks"): KEYED | {202, 404, 409, 413, 415, 422},
    ("get", "/tasks"): KEYED | {200, 404, 422},
    ("get", "/tasks/{name}"): KEYED | {200, 404, 422},
    ("patch", "/tasks/{name}"): KEYED | {200, 404, 413, 415, 422},
    ("get", "/tasks/{name}/card"): KEYED | {200, 404, 422},
    ("get", "/jobs"): KEYED | {200, 422},
    ("post", "/predictions/batch"): KEYED | {202, 404, 413, 415, 422},
    ("get", "/predictions/batch/{job_id}"): KEYED | {200, 404, 409, 422},
    ("get", "/jobs/{job_id}"): KEYED | {200, 404, 422},
    ("post", "/jobs/{job_id}/cancel"): KEYED | {200, 404, 409, 422},
    ("get", "/models"): KEYED | {200},
    ("post", "/models"): KEYED | {201, 413, 422},
    ("get", "/models/{version}"): KEYED | {200, 404, 422},
    ("post", "/models/{version}/activate"): KEYED | {200, 404, 409, 413, 415, 422},
    ("get", "/keys"): KEYED | {200, 422},
    ("post", "/keys"): KEYED | {201, 413, 415, 422},
    ("delete", "/keys/{key_id}"): KEYED | {200, 404, 422},
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    app = create_app(Settings(database_url="sqlite://", device="cpu"))
    document = app.openapi()
    assert app.openapi() is document  # built once, then cached
    return json.loads(json.dumps(document))  # exactly what /openapi.json serves


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items()]


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> OAS31Validator:
    """A validator whose `#/components/...` refs resolve in `doc`."""
    return OAS31Validator({**schema, "components": doc["components"]})


def test_document_is_valid_openapi(doc):  # type: ignore[no-untyped-def]
    validate(doc)
    assert doc["openapi"].startswith("3.1")


def test_every_ref_resolves_and_fastapi_error_shapes_are_gone(doc):  # type: ignore[no-untyped-def]
    found = refs(doc)
    assert "#/components/schemas/Sample" in found and "#/components/schemas/ErrorBody" in found
    for ref in found:
        resolve(doc, ref)  # KeyError names a dangling ref
    assert "HTTPValidationError" not in json.dumps(doc)


def test_every_operation_documents_its_codes_with_the_error_body(doc):  # type: ignore[no-untyped-def]
    assert {(m, p) for m, p, _ in operations(doc)} == set(EXPECTED)
    for method, path, op in operations(doc):
        codes = {int(c) for c in op["responses"]}
        assert codes == EXPECTED[(method, path)], (method, path)
        for code, response in op["responses"].items():
            if int(code) < 400 or (path == "/readyz" and code == "503"):
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
        for code, header in (("401", "WWW-Authenticate"), ("429", "Retry-After"), ("503", "Retry-After")):
            if code in op["responses"] and path != "/readyz":
                assert op["responses"][code]["headers"][header]["required"] is True


def test_error_body_requires_code_message_field(doc):  # type: ignore[no-untyped-def]
    info = doc["components"]["schemas"]["ErrorInfo"]
    assert set(info["required"]) == {"code", "message", "field"}
    check = validator(doc, {"$ref": "#/components/schemas/ErrorBody"})
    assert check.is_valid({"error": {"code": "x", "message": "m", "field": None, "line": 3}})
    assert not check.is_valid({"detail": [{"loc": ["body"], "msg": "m", "type": "t"}]})


def test_bearer_scheme_on_every_keyed_route_only(doc):  # type: ignore[no-untyped-def]
    (name, scheme), *_ = doc["components"]["securitySchemes"].items()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for method, path, op in operations(doc):
        expected = None if (method, path) in OPEN else [{name: []}]
        assert op.get("security") == expected, (method, path)


def test_response_models_promise_only_what_is_always_there(doc):  # type: ignore[no-untyped-def]
    schemas = doc["components"]["schemas"]
    prediction = schemas["Prediction"]
    assert {"id", "output", "modalities", "routing", "out_of_training_range"} <= set(prediction["required"])
    item = schemas["OutOfTrainingRange"]
    assert set(item["required"]) == {"field", "low", "high"}
    assert {t["type"] for t in item["properties"]["low"]["anyOf"]} == {"number", "null"}
    binary = schemas["BinaryOutput"]
    assert binary["properties"]["probability"] == {"type": "number", "title": "Probability"}
    assert set(binary["required"]) == {"type", "probability", "label", "class_name"}


def test_every_request_body_has_examples_valid_against_its_schema(doc):  # type: ignore[no-untyped-def]
    seen = 0
    for method, path, op in operations(doc):
        for media_type, media in op.get("requestBody", {}).get("content", {}).items():
            examples = media.get("examples")
            assert examples, f"{method} {path} {media_type} has no examples"
            check = validator(doc, media["schema"])
            for name, example in examples.items():
                errors = [e.message for e in check.iter_errors(example["value"])]
                assert not errors, (method, path, name, errors)
                seen += 1
    predict = doc["paths"]["/predict/{task}"]["post"]["requestBody"]["content"]["application/json"]
    assert {"instances"} == set(predict["examples"]["instances"]["value"])
    assert "multipart/form-data" in doc["paths"]["/datasets"]["post"]["requestBody"]["content"]
    assert seen >= 7
    assert not validator(doc, predict["schema"]).is_valid({"instances": []})


@pytest.fixture(scope="module")
def served(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("openapi")
    settings = Settings(
        database_url=f"sqlite:///{root / 'registry.db'}", artifact_root=root / "artifacts", device="cpu"
    )
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    factory = make_session_factory(engine)
    cl, _ = build_demo_model(n=200, epochs=0, config=TINY)
    register_model(session_factory=factory, store=LocalArtifactStore(settings.artifact_root), cl=cl)
    with session_scope(factory) as session:
        token = create_api_key(session=session, name="admin", scopes=["admin"])[1]
    with TestClient(create_app(settings, reload_interval_s=3600)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client
    engine.dispose()


def _check(doc: dict[str, Any], method: str, path: str, response: Any) -> None:
    documented = doc["paths"][path][method]["responses"][str(response.status_code)]
    schema = documented["content"]["application/json"]["schema"]
    errors = [e.message for e in validator(doc, schema).iter_errors(response.json())]
    assert not errors, (path, response.status_code, errors)


def test_prediction_examples_answer_200_as_documented(doc, served):  # type: ignore[no-untyped-def]
    content = doc["paths"]["/predict/{task}"]["post"]["requestBody"]["content"]["application/json"]
    for example in content["examples"].values():
        r = served.post("/predict/mortality", json=example["value"])
        assert r.status_code == 200, r.text
        _check(doc, "post", "/predict/{task}", r)
        for prediction in r.json()["predictions"]:
            assert prediction["out_of_training_range"] == [] and "id" in prediction
    modalities = content["examples"]["one_sample"]["value"]["modalities"]
    r = served.post("/predict/mortality", json={"modalities": modalities})
    assert r.status_code == 200 and r.json()["predictions"][0]["id"] is None


def test_upload_examples_answer_201_and_errors_have_the_error_body(doc, served):  # type: ignore[no-untyped-def]
    content = doc["paths"]["/datasets"]["post"]["requestBody"]["content"]
    form = content["multipart/form-data"]["examples"]["file"]["value"]
    files = {"file": ("train.jsonl", form["file"].encode())}
    r = served.post("/datasets", files=files, data={"name": form["name"], "specs": form["specs"]})
    assert r.status_code == 201, r.text
    _check(doc, "post", "/datasets", r)
    raw = content["application/x-ndjson"]["examples"]["jsonl"]["value"]
    headers = {"content-type": "application/x-ndjson"}
    r = served.post("/datasets", content=raw, params={"specs": form["specs"]}, headers=headers)
    assert r.status_code == 201 and r.json()["n_samples"] == 2, r.text
    for method, path, status in [
        ("post", "/predict/{task}", served.post("/predict/nope", json={"modalities": {}})),
        ("get", "/models/{version}", served.get("/models/v9")),
        ("get", "/models/{version}", served.get("/models/not%20a%20version")),
        ("post", "/tasks", served.post("/tasks", json={})),
        (
            "post",
            "/tasks",
            served.post("/tasks", content=b"\xcd", headers={"content-type": "application/json"}),
        ),
        ("get", "/models", served.get("/models", headers={"Authorization": "Bearer nope"})),
    ]:
        assert status.status_code in (400, 401, 404, 422), status.text
        _check(doc, method, path, status)
