// An agent on the official MCP TypeScript SDK client, as an application
// would use it: default request options (the SDK's 60 s request timeout,
// not reset by progress), no progress handler. It makes a high transfer
// and, told authorization_pending, polls approval_status as the answer
// says until the result comes. Each step is one JSON line on stdout:
//   {"event":"pending","answer":{...}}  the transfer's answer
//   {"event":"result","result":{...},"polls":N}  approval_status's final answer
// Usage: node blockfor-client.mjs http://127.0.0.1:PORT/mcp
// (cmd/countersign/blockfor_test.go runs it.)
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const endpoint = process.argv[2];
if (!endpoint) {
  console.error('usage: node blockfor-client.mjs MCP_ENDPOINT');
  process.exit(2);
}

// answerOf reads a tool result's JSON: structuredContent, else its text.
function answerOf(res) {
  if (res.isError) {
    throw new Error(`tool error: ${JSON.stringify(res.content)}`);
  }
  if (res.structuredContent) {
    return res.structuredContent;
  }
  return JSON.parse(res.content.map((c) => c.text ?? '').join(''));
}

const say = (line) => process.stdout.write(JSON.stringify(line) + '\n');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const client = new Client({ name: 'countersign-blockfor-test', version: '1' });
await client.connect(new StreamableHTTPClientTransport(new URL(endpoint)));

const pending = answerOf(await client.callTool({
  name: 'transfer',
  arguments: { from: 'operating', to: 'Acme Supplies', amount: 50000, currency: 'USD' },
}));
say({ event: 'pending', answer: pending });
if (pending.status !== 'authorization_pending') {
  process.exit(1);
}

let interval = pending.interval;
for (let polls = 1; ; polls++) {
  await sleep(interval * 1000);
  const st = answerOf(await client.callTool({ name: 'approval_status', arguments: { auth_req_id: pending.auth_req_id } }));
  if (st.status === 'slow_down') {
    interval += 5; // CIBA: a client told to slow down polls 5 s less often
    continue;
  }
  if (st.status === 'authorization_pending' || st.status === 'approved') {
    continue;
  }
  say({ event: 'result', result: st, polls });
  await client.close();
  process.exit(st.status === 'executed' ? 0 : 1);
}
