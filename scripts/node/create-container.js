// Creates a container on an Azurite blob endpoint, signed with the emulator's well-known
// account key (public, documented by Microsoft). Used by tests/object_stores.rs:
//   node create-container.js http://127.0.0.1:PORT/devstoreaccount1 CONTAINER
const { BlobServiceClient, StorageSharedKeyCredential } = require("@azure/storage-blob");

const [endpoint, container] = process.argv.slice(2);
const credential = new StorageSharedKeyCredential(
  "devstoreaccount1",
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
);
new BlobServiceClient(endpoint, credential)
  .getContainerClient(container)
  .create()
  .catch((e) => {
    console.error(`creating container ${container} at ${endpoint}: ${e.message}`);
    process.exit(1);
  });
