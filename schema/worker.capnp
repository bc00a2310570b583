@0x9cec09a20b87e64e;
# The control channel between a node and an isolated worker (`troupe worker`).
#
# One request, one reply, in turn, over a Unix socket. Payloads do not travel here: they
# lie in two shared-memory regions the node creates (memfd) and hands to the worker at
# spawn: region 0 carries inputs to the worker, region 1 carries outputs back. A header
# names a payload by region, offset and size.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("troupe::wire");

const protocolVersion :UInt32 = 1;

struct KeyValue {
  key @0 :Text;
  value @1 :Text;
}

struct Payload {
  region @0 :UInt8;   # 0: inputs (node -> worker), 1: outputs (worker -> node)
  offset @1 :UInt64;
  size @2 :UInt64;
}

struct Frame {
  stream @0 :UInt64;
  seq @1 :UInt64;
  part @2 :UInt32;
  generation @3 :UInt64;
  timestampNs @4 :Int64;
  type @5 :Text;
  meta @6 :List(KeyValue);
  payload @7 :Payload;
}

struct Request {
  union {
    create @0 :List(KeyValue);   # the validated config; the worker creates the instance
    start @1 :Void;
    process @2 :List(Frame);     # inputs, in order; empty: ask a source for frames
    stop @3 :Void;
    health @4 :Void;
    destroy @5 :Void;            # the worker destroys the instance and exits
  }
}

struct Result {
  status @0 :Int32;              # troupe_status of the call
  error @1 :Text;
  outputs @2 :List(Frame);
}

struct Reply {
  results @0 :List(Result);      # one per input (one for every other request)
  done @1 :UInt32;               # results that hold a call made: after a fatal one, none
}

struct Hello {
  # The worker's first message: it runs, with its limits in force.
  protocol @0 :UInt32;
  pid @1 :Int32;
  error @2 :Text;                # not empty: the worker could not set up and exits
}
