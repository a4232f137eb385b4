"""A Flask application whose logged-in users reach zbifrost as themselves (README: "Your
application's users").

The page asks `/zbifrost-token` for a short-lived JWT signed with the secret that zbifrost's
`websocket.jwt` section also reads; bifrost.js's `getToken` calls it at every connection and
shortly before each token expires. Run it next to zbifrost (see README.md in this folder):

    flask --app app run --port 5000
"""

import os
import time

import jwt
from flask import Flask, abort, jsonify, send_file, session

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN_LIFETIME = 300  # seconds; the page refreshes before the end, so keep it short

app = Flask(__name__)
app.secret_key = os.environ.get("FLASK_SECRET_KEY", "change me: Flask's own session key")
with open(os.path.join(HERE, "jwt.secret"), encoding="utf-8") as handle:
    ZBIFROST_SECRET = handle.read().strip()  # the same file as zbifrost.yaml's secret_file


@app.get("/login/<name>")
def login(name):
    """Stands in for the application's real login."""
    session["user"] = name
    return f"Logged in as {name}. <a href='/'>Open the page</a>"


@app.get("/zbifrost-token")
def zbifrost_token():
    """A JWT for the logged-in user: `sub` is the user, `role` their role in zbifrost."""
    user = session.get("user")
    if user is None:
        abort(401)
    now = int(time.time())
    claims = {"sub": user, "role": "user", "iat": now, "exp": now + TOKEN_LIFETIME,
              "aud": "my-app", "iss": "http://127.0.0.1:5000"}
    return jsonify(token=jwt.encode(claims, ZBIFROST_SECRET, algorithm="HS256"))


@app.get("/")
def page():
    return send_file(os.path.join(HERE, "index.html"))
