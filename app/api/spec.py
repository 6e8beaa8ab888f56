"""The API object of one app: flask-smorest's Api, generating the OpenAPI 3.1 document from
the blueprints' schemas, with two changes: errors are documented as problem+json
(app/api/problems.py), and the app's own error handlers answer them (flask-smorest's would
answer every error of the site, pages included, in its JSON)."""

from __future__ import annotations

import http

from apispec import BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from flask_smorest import Api
from flask_smorest.utils import prepare_response

from app.api.problems import HTTP_SLUGS, MEDIA_TYPE, ProblemSchema

API_VERSION = "1.0.0"


def _schema_name(schema: type) -> str:
    """`ExportSchema` is `Export` in the document."""
    name = schema.__name__ if isinstance(schema, type) else type(schema).__name__
    return name.removesuffix("Schema") or name


class OperationIds(BasePlugin):
    """Names every operation after its view, without the "api." of its blueprint
    (`exports.get_export`): stable names that OpenAPI links (conventions.links_to) and client
    generators refer to."""

    def operation_helper(self, path: str | None = None, operations: dict | None = None,
                         **kwargs: object) -> None:
        rule = kwargs.get("rule")
        if rule is None or not operations:
            return
        name = rule.endpoint.removeprefix("api.")
        for method, operation in operations.items():
            operation.setdefault("operationId", name if len(operations) == 1 else
                                 f"{name}.{method}")


class MicroblogApi(Api):
    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self) -> None:
        """None: app/errors/handlers.py answers problem+json under /api/."""

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            response: dict = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, MEDIA_TYPE)
            # The errors the API answers are always in the document, so that a view's own
            # `{"$ref": "#/components/responses/CONFLICT"}` resolves (a lazy component is
            # written only when flask-smorest itself refers to it).
            self.spec.components.response(status.name, response,
                                          lazy=status not in HTTP_SLUGS)
        response = {"description": "an error (problem+json)", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, MEDIA_TYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)


def make_api(app: Flask) -> MicroblogApi:
    app.config.update(
        API_TITLE="Microblog API", API_VERSION=API_VERSION, OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api", OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": "Everything a user does with their posts and jobs, by "
                                    "token. Conventions: /api/docs and docs/api.md."},
            "servers": [{"url": "/"}],
            "components": {"securitySchemes": {
                "token": {"type": "http", "scheme": "bearer",
                          "description": "a personal access token (mbt_...)"},
                "password": {"type": "http", "scheme": "basic"}}},
            "security": [{"token": []}],
        })
    return MicroblogApi(app, spec_kwargs={
        "marshmallow_plugin": MarshmallowPlugin(schema_name_resolver=_schema_name),
        "extra_plugins": [OperationIds()]})


def init_app(app: Flask) -> MicroblogApi:
    """The API on the web app: its blueprint, without CSRF (no cookie authenticates it), its
    JSON bodies checked by their schemas (not as form fields), and its own errors."""
    from app import csrf
    from app.api import bp
    from app.api.conventions import IdConverter
    from app.api.problems import ApiProblem
    from app.errors.guards import JSON_API_BLUEPRINTS

    app.url_map.converters["id"] = IdConverter
    api = make_api(app)
    api.register_converter(IdConverter, lambda converter: dict(IdConverter.openapi))
    api.register_blueprint(bp)
    for resource, _options in bp._blueprints:  # the nested resources, as Flask keeps them
        api.spec.tag({"name": resource.name, "description": resource.description})
    for name, blueprint in app.blueprints.items():
        if name == bp.name or name.startswith(bp.name + "."):
            csrf.exempt(blueprint)
            JSON_API_BLUEPRINTS.add(name)
    app.register_error_handler(ApiProblem, ApiProblem.get_response)
    from app.api.docs import bp as docs_bp

    app.register_blueprint(docs_bp)
    return api
