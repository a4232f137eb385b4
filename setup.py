"""Packaging for zbifrost.

`twisted.plugins` is listed so that `pip install .` puts twisted/plugins/zbifrost_plugin.py
into site-packages/twisted/plugins/ where twistd finds it (that folder has no __init__.py on
purpose). The bundled demo workspace, the top-level zui/ folder, is installed as
zbifrost/demo so that an installed zbifrost serves it by default.

`pip install -e .` uses setuptools' "compat" editable mode: it puts the checkout on sys.path,
where twistd's plugin search finds twisted/plugins/; the default mode's import hook does not
(twistd then says "Unknown command: zbifrost").
"""

import re

from setuptools import find_packages, setup

with open("zbifrost/__init__.py", encoding="utf-8") as handle:
    VERSION = re.search(r'__version__ = "([^"]+)"', handle.read()).group(1)

with open("README.md", encoding="utf-8") as handle:
    LONG_DESCRIPTION = handle.read()

setup(
    name="zbifrost",
    version=VERSION,
    description="WebSocket bridge from web pages to the commands a Python backend declares in zUI files",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="MIT",
    author="The zbifrost authors",
    python_requires=">=3.10",
    # every package under zbifrost/, found rather than listed, so that a new one cannot be left out
    packages=[*find_packages(include=["zbifrost", "zbifrost.*"]), "zbifrost.demo", "twisted.plugins"],
    package_dir={"zbifrost.demo": "zui"},
    package_data={
        "zbifrost": ["static/*", "py.typed"],
        "zbifrost.demo": ["*.yaml", "*.yml", "*.json", "plugins/*.py", "*/*.yaml", "*/*/*.yaml"],
        "twisted.plugins": ["zbifrost_plugin.py"],
    },
    install_requires=[
        "twisted>=26.4",  # 25.5 and older break TLS with pyOpenSSL 25.1+ ("Context has already been used")
        "autobahn>=26.7.1",
        "pyyaml>=6.0",
        "orjson>=3.9",
        # zbifrost.channels.IChannelBackend; autobahn.twisted needs 6.2 (it joins interfaces with |)
        "zope.interface>=6.2",
        "prometheus_client>=0.17",
        "txredisapi>=1.6",  # --broker: Redis on the reactor (zbifrost.channels.redis)
        # txredisapi's C reply parser when installed; its pure-Python one takes a reactor turn
        # per element of a reply, so a pub/sub backlog never drains (bench/fanout.py)
        "hiredis>=2",
        # websocket.jwt, through PyJWT's public API only, so that its security releases are taken as they come;
        # cryptography for RS256, ES256, EdDSA. 2.14 is the first release that refuses every malformed token
        # of tests/test_auth_jwt.py (2.13 accepts a non-canonical base64url segment)
        "pyjwt[crypto]>=2.14,<3",
    ],
    extras_require={
        "tls": ["twisted[tls]"],
        # zbifrost.client (the asyncio client, the command line); 13.0's asyncio client fails an assertion on
        # a refused upgrade instead of reporting its HTTP status
        "client": ["websockets>=13.1"],
        "test": ["pytest>=8", "pytest-twisted>=1.14", "websockets>=13.1", "twisted[tls]", "kosoku>=0.1",
                 "hypothesis>=6"],
    },
    options={"editable_wheel": {"mode": "compat"}},
    entry_points={"console_scripts": ["zbifrost-tokens = zbifrost.tokens:main",
                                      "zbifrost-client = zbifrost.client.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP",
        "License :: OSI Approved :: MIT License",
        "Typing :: Typed",
    ],
)
