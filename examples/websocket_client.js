// The JavaScript client of seed 000 §4, run by Node.js against a minipool ws:// server.
//
// Usage:
//   node examples/websocket_client.js ws://127.0.0.1:8765 [message ...]
//   (Node 20/21: node --experimental-websocket examples/websocket_client.js ...;
//    Node 22+ and every browser have the WebSocket global built in.)
//
// Like the article's sender, it generates random lowercase lines with one capital letter,
// encodes them with TextEncoder and sends them as a *binary* message; messages given on the
// command line are sent too, as *text*. Each echo the server sends back is decoded and printed
// with the article's mapper (processLine). It exits 0 once every message has come back, 1 on
// an error or an early close, 2 after 10 seconds without finishing.

"use strict";

if (typeof WebSocket === "undefined") {
  console.error("this Node.js has no WebSocket global: use Node 22+, or --experimental-websocket");
  process.exit(3);
}

const url = process.argv[2] || "ws://127.0.0.1:8000";
const texts = process.argv.slice(3);

// The article's sender: 1-5 random lines (fewer than its 100, to keep the output short).
function generateLines() {
  const numLines = Math.floor(Math.random() * 5) + 1;
  const lines = [];
  for (let i = 0; i < numLines; i++) {
    const lineLength = Math.floor(Math.random() * 20) + 1;
    const chars = [];
    for (let j = 0; j < lineLength; j++) {
      chars.push(String.fromCharCode(Math.floor(Math.random() * 26) + 97));
    }
    // Capitalise the letter at a random place (the article's indexToCapitalize).
    const indexToCapitalize = Math.floor(Math.random() * lineLength);
    chars[indexToCapitalize] = chars[indexToCapitalize].toUpperCase();
    lines.push(chars.join(""));
  }
  return lines.join("\n") + "\n";
}

// The article's mapper.
function capitalizeWord(word) {
  return word.charAt(0).toUpperCase() + word.slice(1);
}

function processLine(line) {
  const words = line.trim().toLowerCase().split(/\W+/g).filter((word) => word !== "");
  const processed = words.map((word, idx) => `${idx + 1}. ${capitalizeWord(word)}`).join(", ");
  return `[${words.length}] Line content: ${processed}`;
}

const generated = generateLines();
const expected = [generated, ...texts];
let received = 0;

const socket = new WebSocket(url);
socket.binaryType = "arraybuffer"; // the article used a Blob and FileReader; Node has no FileReader

const timer = setTimeout(() => {
  console.error(`timed out after ${received} of ${expected.length} echoes`);
  process.exit(2);
}, 10000);

socket.addEventListener("open", () => {
  socket.send(new TextEncoder().encode(generated)); // binary, as the article sends it
  console.log(`sent ${generated.split("\n").length - 1} lines (binary)`);
  for (const text of texts) {
    socket.send(text); // text
  }
});

socket.addEventListener("message", (event) => {
  const data = typeof event.data === "string" ? event.data : new TextDecoder("utf-8").decode(event.data);
  const kind = typeof event.data === "string" ? "text" : "binary";
  if (data !== expected[received]) {
    console.error(`echo ${received} differs: ${JSON.stringify(data)}`);
    process.exit(1);
  }
  console.log(`echo ${received} (${kind}): ${JSON.stringify(data)}`);
  for (const line of data.split("\n").filter((l) => l !== "")) {
    console.log(`  mapped: ${processLine(line)}`);
  }
  received += 1;
  if (received === expected.length) {
    socket.close(1000, "done");
  }
});

socket.addEventListener("close", (event) => {
  clearTimeout(timer);
  console.log(`closed with code ${event.code}`);
  process.exit(received === expected.length ? 0 : 1);
});

socket.addEventListener("error", (event) => {
  console.error(`WebSocket error: ${event.message || event.type}`);
  process.exit(1);
});
