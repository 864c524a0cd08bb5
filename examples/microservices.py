"""Seed 003 §4.2's two microservices (users, articles), on the standard library, found through
minipool's service registry.

The seed writes a blog as two Flask services: ``/users`` on port 5001 and ``/articles`` on port
5002, each answering GET with a JSON list and POST by adding an item. Here each is an
``http.server`` on 127.0.0.1 with a port the OS picks, so nothing is hard-coded: each service
registers its address in the coordinator's registry (``pool.register``, with a time-to-live it
would renew while alive), and the client finds it by name (``pool.lookup``), which is what
service discovery (seed 000 §2.1) means. The client then calls both services and hands a
computation over their data (word statistics of every article) to the pool's workers.

    python examples/microservices.py
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minipool import Pool

# -- a microservice: one resource, GET lists it, POST adds to it --------------------------------


def start_service(resource: str, items: list[dict]) -> ThreadingHTTPServer:
    """Serve ``/<resource>`` on 127.0.0.1 (a free port) from a thread; return the server."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != f"/{resource}":
                return self.reply(404, {"error": "not found"})
            with lock:
                self.reply(200, list(items))

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
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # keep the example's output readable
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name=f"{resource}-service", daemon=True).start()
    return server


# -- the client ---------------------------------------------------------------------------------


def call(method: str, url: str, body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def discover(pool: Pool, service: str) -> str:
    """The address of a live instance of ``service``, from the registry."""
    entries = pool.lookup(service)
    if not entries:
        raise LookupError(f"no live instance of {service!r}")
    return entries[0]["address"]


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
    users = start_service("users", [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}])
    articles = start_service(
        "articles",
        [
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
        ],
    )
    try:
        with Pool(2) as pool:
            # each service announces itself; a real one renews before the ttl runs out
            for name, server in (("users", users), ("articles", articles)):
                host, port = server.server_address[:2]
                pool.register(f"{name}-1", address=f"http://{host}:{port}", services=[name], ttl=30)

            users_url = discover(pool, "users")
            articles_url = discover(pool, "articles")
            print(f"registry: users at {users_url}, articles at {articles_url}")

            print("GET  /users    ->", call("GET", f"{users_url}/users"))
            print("POST /users    ->", call("POST", f"{users_url}/users", {"id": 3, "name": "Carol"}))
            new = {
                "id": 3,
                "title": "Service Discovery",
                "author": 3,
                "body": "services find each other by name through the registry not by port",
            }
            print("POST /articles ->", call("POST", f"{articles_url}/articles", new)["title"])

            all_users = {u["id"]: u["name"] for u in call("GET", f"{users_url}/users")}
            all_articles = call("GET", f"{articles_url}/articles")
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
        for server in (users, articles):
            server.shutdown()
            server.server_close()

    if stats != [article_stats(a) for a in all_articles] or len(all_users) != 3:
        print("the pool's statistics differ from a serial run!", file=sys.stderr)
        return 1
    print("matches a serial run: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
