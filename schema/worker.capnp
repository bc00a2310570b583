@0x9cec09a20b87e64e;
# The control channel between a node and an isolated worker (`troupe worker`).
#
# One request, one reply, in turn, over a Unix socket. Payloads do not travel here: they
# lie in two shared-memory regions the node creates (memfd) and hands to the worker at
# spawn: region 0 carries inputs to the worker, region 1 carries outputs back. A header
# names a payload by region, offset and size.
#
# A process request carries a batch of inputs. The worker writes each input's Result, as
# a flat message, into the results area at the start of region 1 as soon as the call
# returns, and counts it in the control block at the start of region 0 (with the index of
# the input it works on): what a worker finished before it crashed is not lost, and the
# node can name the input it crashed on. The Reply to a process request says only how many
# results there are.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("troupe::wire");

const protocolVersion :UInt32 = 2;

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
    process @2 :List(Frame);     # inputs, in order (a batch); empty: ask a source for frames
    stop @3 :Void;
    health @4 :Void;
    destroy @5 :Void;            # the worker destroys the instance and exits
  }
}

struct Result {
  status @0 :Int32;              # troupe_status of the call
  error @1 :Text;
  outputs @2 :List(Frame);
  nanos @3 :UInt64;              # how long the call took
}

struct Reply {
  results @0 :List(Result);      # the one result of any request but process
  done @1 :UInt32;               # results committed: fewer than the inputs after a fatal
                                 # one, or when the output region filled up (the node
                                 # sends the rest again)
}

struct Hello {
  # The worker's first message: it runs, with its limits in force.
  protocol @0 :UInt32;
  pid @1 :Int32;
  error @2 :Text;                # not empty: the worker could not set up and exits
}
