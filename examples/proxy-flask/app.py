"""A Flask application that stays in charge behind zbifrost (README: "Proxies to the application").

Its logged-in users connect with the session cookie the application already set (the connect
proxy), its "Place Order" command is served here with this user's permission checked (a `zHTTP`
action), and a user may subscribe only to their own order channel (the subscribe proxy). Every
request from zbifrost is signed with the secret in proxy.secret. Run it next to zbifrost (see
README.md in this folder):

    flask --app app run --port 5000
"""

import hashlib
import hmac
import json
import os
import time
import urllib.request
from functools import wraps

from flask import Flask, abort, jsonify, request, send_file, session

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_SKEW = 60  # seconds a signed request may be old (or early)
MAY_ORDER = {"alice"}  # stands in for the application's permissions

app = Flask(__name__)
app.secret_key = os.environ.get("FLASK_SECRET_KEY", "change me: Flask's own session key")
with open(os.path.join(HERE, "proxy.secret"), "rb") as handle:
    PROXY_SECRET = handle.read().strip()  # the same file as zbifrost.yaml's proxy.secret_file


def from_zbifrost(view):
    """Answer only requests that zbifrost signed, recently."""
    @wraps(view)
    def checked():
        timestamp = request.headers.get("X-Zbifrost-Timestamp", "")
        expected = "sha256=" + hmac.new(PROXY_SECRET, timestamp.encode() + b"." + request.get_data(),
                                        hashlib.sha256).hexdigest()
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= MAX_SKEW
        if not fresh or not hmac.compare_digest(request.headers.get("X-Zbifrost-Signature", ""), expected):
            abort(403)
        return view(request.get_json())
    return checked


@app.get("/login/<name>")
def login(name):
    """Stands in for the application's real login."""
    session["user"] = name
    return f"Logged in as {name}. <a href='/'>Open the page</a>"


@app.get("/logout")
def logout():
    """Log out here, and everywhere zbifrost holds a connection of this user (the server API's
    `disconnect`, docs/protocol.md section 12, with ZBIFROST_API_KEY = websocket.api_key)."""
    user = session.pop("user", None)
    key = os.environ.get("ZBIFROST_API_KEY")
    if user is not None and key:
        call = urllib.request.Request("http://127.0.0.1:18774/api/disconnect", data=json.dumps({"user": user}).encode(),
                                      headers={"X-API-Key": key, "Content-Type": "application/json"})
        urllib.request.urlopen(call, timeout=5).close()
    return "Logged out."


@app.post("/zbifrost/connect")
@from_zbifrost
def zbifrost_connect(facts):
    """Who is connecting: the user of the session cookie zbifrost copied from the upgrade."""
    if "user" not in session:
        return jsonify(disconnect={"reason": "Log in first"})
    return jsonify(result={"user": session["user"], "role": "user"})


@app.post("/zbifrost/orders")
@from_zbifrost
def place_order(command):
    """The "Place Order" command: zKey, zBlock, args, data, user, role, client_id."""
    if command["user"] not in MAY_ORDER:
        return jsonify(error=f"{command['user']} may not place orders", code="forbidden"), 403
    item = command["args"][0] if command["args"] else None
    if not isinstance(item, str) or not item:
        return jsonify(error="Say what to order", code="invalid_input", details={"item": "required"}), 422
    return jsonify(message=f"Ordered {item} for {command['user']}", item=item)


@app.post("/zbifrost/subscribe")
@from_zbifrost
def zbifrost_subscribe(asked):
    """Each user may follow only their own orders: orders.<user>."""
    if asked["channel"] != f"orders.{asked['user']}":
        return jsonify(error="not your orders"), 403
    return jsonify(result={})


@app.get("/")
def page():
    return send_file(os.path.join(HERE, "index.html"))
