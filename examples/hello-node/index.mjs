// The hello function in Node.js: a Lambda HTTP handler, as Lambda's Node
// tutorials write one. Called through its function URL
// (`curl -X POST localhost:8080/fn/hello-node -d '{"name":"Ada"}'`) it
// gets Lambda's function URL event and reads the JSON request body from
// event.body; `stoke invoke` hands it the event itself.
export const handler = async (event, context) => {
  let input = event ?? {};
  if (event?.version === "2.0" && event.requestContext) {
    const raw = event.isBase64Encoded ? Buffer.from(event.body ?? "", "base64").toString() : event.body;
    input = raw ? JSON.parse(raw) : {};
  }
  if (input.fail) throw new Error(String(input.fail));
  return {
    statusCode: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      message: `Hello, ${input.name ?? "world"}!`,
      runtime: `node ${process.version}`,
      request_id: context.awsRequestId,
    }),
  };
};
