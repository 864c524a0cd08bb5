"""Seed 003 §4.2's two microservices (users, articles), on the standard library, calling each
other through minipool's service registry.

The seed writes a blog as two Flask services: ``/users`` on port 5001 and ``/articles`` on port
5002, each answering GET with a JSON list and POST by adding an item. It says they "communicate
through APIs", but they never call each other, and its POST handlers fail: ``users`` and
``articles`` are assigned only in the GET branch, so ``users.append(user)`` raises
``UnboundLocalError`` (docs/articles/003.md has the fix).

Here each service is an ``http.server`` on 127.0.0.1 with a port the OS picks. Each registers
its address in the coordinator's registry under a service name, with a time-to-live, and renews
it while it runs (``pool.register``); whoever needs it finds it by name (``pool.lookup``), which
is what service discovery (seed 000 §2.1) means. The articles service needs the authors' names,
so on every ``GET /articles`` it looks the users service up and calls ``GET /users/<id>``,
trying the instances the registry lists until one answers. The script then replaces the users
service by a new instance on another port: the articles service follows it with no
configuration, skipping the dead instance until its entry expires. Finally the client hands a
computation over the articles (word statistics) to the pool's workers.

    python examples/microservices.py
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minipool import Pool

TTL = 1.0  # seconds a registration lives unless renewed; a service renews it every TTL / 4

# -- a microservice: one resource, GET lists it or one item, POST adds to it --------------------


class Service:
    """Serve ``/<resource>`` from ``items`` on 127.0.0.1 (a free port), registered as ``key``
    offering ``resource`` while it runs; ``expand`` may enrich each item a GET returns."""

    def __init__(
        self,
        pool: Pool,
        key: str,
        resource: str,
        items: list[dict],
        expand: Callable[[dict], dict] = lambda item: item,
    ) -> None:
        self.pool, self.key, self.resource = pool, key, resource
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                if parts[0] != resource or len(parts) > 2:
                    return self.reply(404, {"error": "not found"})
                with lock:
                    found = [i for i in items if len(parts) == 1 or str(i["id"]) == parts[1]]
                if len(parts) == 2 and not found:
                    return self.reply(404, {"error": f"no {resource} {parts[1]}"})
                try:
                    body = [expand(item) for item in found]
                except LookupError as exc:  # a service it depends on is unreachable
                    return self.reply(503, {"error": str(exc)})
                self.reply(200, body if len(parts) == 1 else body[0])

            def do_POST(self) -> None:
                if self.path != f"/{resource}":
                    return self.reply(404, {"error": "not found"})
                try:
                    item = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                except ValueError:
                    return self.reply(400, {"error": "the body is not JSON"})
                with lock:
                    items.append(item)
                self.reply(201, item)

            def reply(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Instance", key)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:  # keep the example's output readable
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self.server.server_address[:2]
        self.address = f"http://{host}:{port}"
        self.stopped = threading.Event()
        self.register()
        self.threads = [
            threading.Thread(target=self.server.serve_forever, name=f"{key}-http", daemon=True),
            threading.Thread(target=self.renew, name=f"{key}-renew", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def register(self) -> None:
        self.pool.register(self.key, address=self.address, services=[self.resource], ttl=TTL)

    def renew(self) -> None:  # a heartbeat: a crashed service stops renewing and expires
        while not self.stopped.wait(TTL / 4):
            self.register()

    def stop(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self.threads:
            thread.join(5)


# -- calling a service found by name ------------------------------------------------------------


def call(method: str, url: str, body: object = None) -> tuple[object, str]:
    """The decoded JSON reply and the instance (``X-Instance``) that sent it."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response), response.headers["X-Instance"]


def discover(pool: Pool, service: str) -> str:
    """The address of a live instance of ``service``, from the registry."""
    entries = pool.lookup(service)
    if not entries:
        raise LookupError(f"no live instance of {service!r}")
    return entries[0]["address"]


def call_service(pool: Pool, service: str, path: str, log: list[str]) -> object:
    """GET ``path`` from the first instance of ``service`` that answers; a refused connection
    means the instance died and its registration has not expired yet, so try the next."""
    for entry in pool.lookup(service):
        try:
            body, instance = call("GET", entry["address"] + path)
        except urllib.error.URLError as exc:
            if isinstance(exc, urllib.error.HTTPError):
                raise
            log.append(f"{entry['key']} refused")
            continue
        log.append(f"{instance} answered")
        return body
    raise LookupError(f"no instance of {service!r} answers")


def article_stats(article: dict) -> dict:
    """The computation handed to the workers: word statistics of one article."""
    words = article["body"].lower().split()
    return {
        "id": article["id"],
        "words": len(words),
        "distinct": len(set(words)),
        "top": Counter(words).most_common(1)[0][0],
    }


def main() -> int:
    people = [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}]  # the users' database
    posts = [
        {
            "id": 1,
            "title": "Hello, World!",
            "author": 1,
            "body": "hello world this is the first post of the blog hello again",
        },
        {
            "id": 2,
            "title": "Distributed Computing",
            "author": 2,
            "body": "a pool of workers computes what one machine cannot and the pool grows",
        },
    ]
    calls: list[str] = []  # what the articles service's calls to the users service met
    with Pool(2) as pool:
        services = [Service(pool, "users-1", "users", people)]

        def with_author(article: dict) -> dict:  # the articles service calls the users service
            user = call_service(pool, "users", f"/users/{article['author']}", calls)
            return {**article, "author_name": user["name"]}

        services.append(Service(pool, "articles-1", "articles", posts, expand=with_author))
        try:
            users_url = discover(pool, "users")
            articles_url = discover(pool, "articles")
            print(f"registry: users at {users_url}, articles at {articles_url}")

            print("GET  /users    ->", call("GET", f"{users_url}/users")[0])
            print("POST /users    ->", call("POST", f"{users_url}/users", {"id": 3, "name": "Carol"})[0])
            new = {
                "id": 3,
                "title": "Service Discovery",
                "author": 3,
                "body": "services find each other by name through the registry not by port",
            }
            print("POST /articles ->", call("POST", f"{articles_url}/articles", new)[0]["title"])

            listed, _ = call("GET", f"{articles_url}/articles")
            first_names = [a["author_name"] for a in listed]
            print(f"GET  /articles -> authors {first_names}; articles-1 called users: {calls}")

            # The users service moves: instance 1 stops (it stops renewing, as a crashed one
            # would), instance 2 starts on another port over the same database and registers.
            services[0].stop()
            services[0] = Service(pool, "users-2", "users", people)
            print(f"users-1 stopped; users-2 registered at {services[0].address}")
            calls.clear()
            moved, _ = call("GET", f"{articles_url}/articles")
            names = [a["author_name"] for a in moved]
            print(f"GET  /articles -> authors {names}; articles-1 called users: {calls}")
            deadline = time.monotonic() + 10 * TTL
            while len(pool.lookup("users")) > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            live = [e["key"] for e in pool.lookup("users")]
            print(f"after users-1's ttl ({TTL} s) the registry lists users instances {live}")
            after_calls = list(calls)

            all_users = {u["id"]: u["name"] for u in call("GET", f"{discover(pool, 'users')}/users")[0]}
            all_articles = moved
            pool.wait_for_workers()
            workers = pool.lookup("default")  # workers register under the service "default"
            print(
                f"\nword statistics of {len(all_articles)} articles, "
                f"on {len(workers)} compute workers found in the registry:"
            )
            stats = list(pool.map(article_stats, all_articles))
            for article, s in zip(all_articles, stats, strict=True):
                print(
                    f"  {article['title']!r:26} by {all_users[article['author']]:<6} "
                    f"{s['words']:3} words, {s['distinct']:3} distinct, most used {s['top']!r}"
                )
        finally:
            for service in services:
                service.stop()

    followed = first_names == ["Alice", "Bob", "Carol"] == [a["author_name"] for a in moved]
    ok = (
        stats == [article_stats(a) for a in all_articles]
        and len(all_users) == 3
        and followed
        and after_calls[-1] == "users-2 answered"
        and live == ["users-2"]
    )
    if not ok:
        print("the services or the pool gave a wrong answer!", file=sys.stderr)
        return 1
    print("the articles service followed the users service to its new address: yes")
    print("matches a serial run: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
