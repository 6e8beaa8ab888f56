"""The API object of one app: flask-smorest's Api, generating the OpenAPI 3.1 document from
the blueprints' schemas, with three changes: errors are documented as problem+json
(app/api/problems.py), the app's own error handlers answer them (flask-smorest's would
answer every error of the site, pages included, in its JSON), and the document is built when
first asked for, not with the app."""

from __future__ import annotations

import http
import threading

from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from flask_smorest import Api, Blueprint
from flask_smorest.spec import openapi_cli
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


class FrontServerAnswers(BasePlugin):
    """Documents on every operation the answer that never reaches the app: a request line
    longer than the HTTP server takes (gunicorn: 4,094 bytes; nginx: 8 KB) is refused by that
    server with its own HTML page, 414."""

    def operation_helper(self, path: str | None = None, operations: dict | None = None,
                         **kwargs: object) -> None:
        for operation in (operations or {}).values():
            operation.setdefault("responses", {}).setdefault("414", {
                "description": "URI Too Long: the HTTP server in front of the app refuses "
                               "the request line (an HTML page, not a problem)",
                "content": {"text/html": {"schema": {"type": "string"}}}})


class MicroblogApi(Api):
    """Building the document walks every view's schemas: about a third of making an app,
    paid by every process (workers, the CLI, each test's app) that never serves the
    document. The routes are registered at once; the document (`spec`) is built on the first
    request for /api/openapi.json or /api/docs, or `flask openapi`."""

    ERROR_SCHEMA = ProblemSchema

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._spec = None
        self._spec_options: dict | None = None
        self._documented: list[tuple[Blueprint, str, list | None]] = []
        self._building = threading.Lock()
        super().__init__(*args, **kwargs)

    @property
    def spec(self) -> APISpec | None:
        if self._spec is None and self._spec_options is not None:
            with self._building:  # two first requests at once build it once
                if self._spec is None:
                    self._build_document()
        return self._spec

    @spec.setter
    def spec(self, value: APISpec | None) -> None:
        self._spec = value

    def _init_spec(self, **options: object) -> None:
        self._spec_options = options
        self._app.cli.add_command(openapi_cli)

    def _build_document(self) -> None:
        options, self._spec_options = self._spec_options, None
        super()._init_spec(**options)  # sets self.spec
        for blp, name, parameters in self._documented:
            blp.register_views_in_doc(self, self._app, self._spec, name=name,
                                      parameters=parameters)
            self._spec.tag({"name": name, "description": blp.description})
            for resource, _options in blp._blueprints:  # nested resources, as Flask keeps them
                self._spec.tag({"name": resource.name, "description": resource.description})

    def register_blueprint(self, blp: Blueprint, *, parameters: list | None = None,
                           **options: object) -> None:
        """Flask's part now, the document's when it is built."""
        name = options.get("name", blp.name)
        self._app.extensions["flask-smorest"]["blp_name_to_api"][name] = self
        self._app.register_blueprint(blp, **options)
        self._documented.append((blp, name, parameters))

    def register_converter(self, converter: type, func: object) -> None:
        if self._spec is None:
            self._converters.append((converter, func))  # used when the document is built
        else:
            super().register_converter(converter, func)

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
        "extra_plugins": [OperationIds(), FrontServerAnswers()]})


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
    for name, blueprint in app.blueprints.items():
        if name == bp.name or name.startswith(bp.name + "."):
            csrf.exempt(blueprint)
            JSON_API_BLUEPRINTS.add(name)
    app.register_error_handler(ApiProblem, ApiProblem.get_response)
    from app.api.docs import bp as docs_bp

    app.register_blueprint(docs_bp)
    return api
