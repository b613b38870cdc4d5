"""A SMART App Launch authorization server for tests: ``python -m ehrflow_devstack.smart_as PORT``.

Built from Authlib's server components (Flask ``AuthorizationServer``, ``AuthorizationCodeGrant`` with
``CodeChallenge`` and ``OpenIDCode``), not by hand. It plays the EHR side of a clinician launch:

- ``GET  /fhir/.well-known/smart-configuration`` discovery (the FHIR base is the ``iss``);
- ``POST /_test/launch`` → ``{"launch": id}``: the EHR opened our app for a patient and user (and the user's
  roles at the EHR, which the id_token then lists in ``roles``);
- ``GET  /authorize``: the clinician is already signed in and consents; redirects with a code;
- ``POST /token``: code + PKCE verifier → access token, ``patient``, ``id_token`` (fhirUser, nonce);
- ``GET  /jwks``: the key that signs id_tokens;
- ``POST /_test/mode`` switches misbehaviour on for negative tests; ``GET /_test/requests`` counts hits.
"""

from __future__ import annotations

import argparse
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin, OpenIDCode
from flask import Flask, jsonify, request
from joserfc.jwk import RSAKey

DEFAULT_MODE: dict[str, Any] = {
    "no_s256": False,  # discovery does not offer PKCE S256
    "omit_patient": False,  # token response lacks `patient` although a patient scope was granted
    "id_token": "good",  # good | wrong-key | wrong-nonce | wrong-audience | expired | foreign-user
    "token_host": None,  # discovery names a token endpoint on another host
}


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"  # a public client: PKCE protects the code

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    patient: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    roles: list[str] = field(default_factory=list)
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


def create_app(port: int, client_id: str, redirect_uris: list[str]) -> Flask:
    base = f"http://127.0.0.1:{port}"
    fhir = f"{base}/fhir"
    signing = RSAKey.generate_key(2048, parameters={"kid": "as-1", "alg": "RS256", "use": "sig"})
    stranger = RSAKey.generate_key(2048, parameters={"kid": "as-1", "alg": "RS256"})
    app = Flask(__name__)
    clients = {client_id: Client(client_id, redirect_uris)}
    launches: dict[str, dict[str, Any]] = {}
    codes: dict[str, Code] = {}
    state: dict[str, Any] = {"mode": dict(DEFAULT_MODE), "requests": 0}

    class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

        def save_authorization_code(self, code: str, req: Any) -> Code:
            context = launches.get(req.payload.data.get("launch", ""), {})
            saved = Code(
                code=code,
                client_id=req.client.client_id,
                redirect_uri=req.payload.redirect_uri,
                scope=req.payload.scope,
                user=context.get("user", "Practitioner/default-clinician"),
                patient=context.get("patient", "Patient/default-patient"),
                nonce=req.payload.data.get("nonce"),
                code_challenge=req.payload.data.get("code_challenge"),
                code_challenge_method=req.payload.data.get("code_challenge_method"),
                roles=list(context.get("roles", [])),
            )
            codes[code] = saved
            return saved

        def query_authorization_code(self, code: str, client: Client) -> Code | None:
            found = codes.get(code)
            return found if found and found.client_id == client.client_id else None

        def delete_authorization_code(self, authorization_code: Code) -> None:
            codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code: Code) -> Code:
            return authorization_code  # the "user" object carries the launch context

    class SmartOpenIDCode(OpenIDCode):  # type: ignore[misc]
        def resolve_client_private_key(self, client: Client) -> RSAKey:
            return stranger if state["mode"]["id_token"] == "wrong-key" else signing

        def get_client_claims(self, client: Client) -> dict[str, Any]:
            mode = state["mode"]["id_token"]
            claims: dict[str, Any] = {"iss": fhir, "aud": [client.get_client_id()]}
            if mode == "wrong-audience":
                claims["aud"] = ["someone-else"]
            if mode == "expired":
                claims["exp"] = int(time.time()) - 600
            return claims

        def exists_nonce(self, nonce: str, req: Any) -> bool:
            return False

        def generate_user_info(self, user: Code, scope: str) -> dict[str, Any]:
            fhir_user = (
                "https://elsewhere.example.net/fhir/" + user.user
                if state["mode"]["id_token"] == "foreign-user"
                else f"{fhir}/{user.user}"
            )
            info: dict[str, Any] = {"sub": user.user.split("/")[-1], "fhirUser": fhir_user}
            if user.roles:
                info["roles"] = user.roles  # the user's roles at the EHR, as some EHRs put them in the id_token
            return info

        def get_authorization_code_claims(self, authorization_code: Code) -> dict[str, Any]:
            claims: dict[str, Any] = super().get_authorization_code_claims(authorization_code)
            if state["mode"]["id_token"] == "wrong-nonce":
                claims["nonce"] = "not-the-nonce-you-sent"
            return claims

    def add_launch_context(grant: Any, response: Any) -> None:
        _, token, _ = response
        code: Code = grant.request.user
        if code.patient and not state["mode"]["omit_patient"]:
            token["patient"] = code.patient.split("/")[-1]

    class LaunchContext:
        """Authlib grant extension: SMART launch context (``patient``) in the token response."""

        def __call__(self, grant: Any) -> None:
            grant.register_hook("after_create_token_response", add_launch_context)

    server = AuthorizationServer(app, query_client=clients.get, save_token=lambda token, req: None)
    extensions = [CodeChallenge(required=True), SmartOpenIDCode(require_nonce=True), LaunchContext()]
    server.register_grant(CodeGrant, extensions)

    @app.before_request
    def count() -> None:
        if not request.path.startswith("/_test/"):
            state["requests"] += 1

    @app.get("/fhir/.well-known/smart-configuration")
    def discovery() -> Any:
        token_host = state["mode"]["token_host"] or base
        return jsonify(
            {
                "issuer": fhir,
                "jwks_uri": f"{base}/jwks",
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{token_host}/token",
                "grant_types_supported": ["authorization_code"],
                "code_challenge_methods_supported": [] if state["mode"]["no_s256"] else ["S256"],
                "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient", "patient/*.read"],
                "capabilities": [
                    "launch-ehr",
                    "launch-standalone",
                    "client-public",
                    "context-ehr-patient",
                    "sso-openid-connect",
                ],
            }
        )

    @app.get("/jwks")
    def jwks() -> Any:
        return jsonify({"keys": [signing.as_dict(private=False)]})

    @app.get("/authorize")
    def authorize() -> Any:
        return server.create_authorization_response(grant_user=object())

    @app.post("/token")
    def token() -> Any:
        return server.create_token_response()

    @app.post("/_test/launch")
    def new_launch() -> Any:
        launch = secrets.token_urlsafe(12)
        launches[launch] = {
            "patient": request.json["patient"],
            "user": request.json["user"],
            "roles": request.json.get("roles", []),
        }
        return jsonify({"launch": launch})

    @app.post("/_test/mode")
    def set_mode() -> Any:
        state["mode"] = {**DEFAULT_MODE, **(request.json or {})}
        return jsonify(state["mode"])

    @app.get("/_test/requests")
    def requests_seen() -> Any:
        return jsonify({"requests": state["requests"]})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--client-id", default="ehrflow-review")
    parser.add_argument("--redirect-uri", action="append", required=True)
    args = parser.parse_args()
    create_app(args.port, args.client_id, args.redirect_uri).run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
