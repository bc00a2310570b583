@0xe01391527e57f6a7;
# Between nodes of a cluster, and between the CLI and a node (admin).
#
# Who is up, who leads and where each stage runs are kept in the cluster's store (etcd), not
# decided here: these interfaces carry checks, nudges and admin calls. Every call carries the
# cluster's protocol version and token: a peer or an admin client that presents another is
# refused with an exception that says which, and the refusing node logs it too.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("troupe::wire");

const clusterProtocol :UInt32 = 5;

struct NodeInfo {
  name @0 :Text;
  peerAddress @1 :Text;     # where peers reach it (host:port)
  adminAddress @2 :Text;
  metricsAddress @3 :Text;  # empty: no /metrics
  lease @4 :Int64;          # its membership lease in the store; 0: none (down)
  dataAddress @5 :Text;     # where peers send frames (schema/link.capnp)
}

struct StagePlacement {
  stage @0 :Text;
  nodes @1 :List(Text);       # the nodes running it (each runs `replicas` of it)
  moves @2 :UInt32;           # how often it started anew elsewhere: its instances start past that generation
}

struct StagePart {
  # A stage a node runs, as that node found it: for checking dependencies and edges across nodes.
  stage @0 :Text;
  plugin @1 :Text;
  version @2 :Text;
  needs @3 :List(Need);
  manifest @4 :Text;         # its plugin's manifest on that node
  inputs @5 :MediaSide;
  outputs @6 :MediaSide;
  config @7 :List(ConfigValue);
}

struct MediaSide {
  # A manifest's inputs or outputs: media types (empty: any) and metadata keys.
  declared @0 :Bool;
  types @1 :List(Text);
  keys @2 :List(Text);
  keysDeclared @3 :Bool;
}

struct ConfigValue {
  key @0 :Text;
  value @1 :Text;
}

struct Need {
  plugin @0 :Text;
  range @1 :Text;
}

struct NodeAddress {
  node @0 :Text;
  dataAddress @1 :Text;
}

interface Peer {
  # Checks this node's part of a pipeline about to be placed: its plugins found, configs valid,
  # libraries loaded. The node deploying asks every node it places stages on before it writes
  # the placement; parts: the stages this node would run, as it found them, so that the node
  # deploying checks dependencies across nodes.
  check @0 (protocol :UInt32, token :Text, pipeline :Text, source :Text,
            placement :List(StagePlacement), nodes :List(NodeAddress), run :Text)
      -> (parts :List(StagePart));
  # The store changed (a deploy, a stop): read it now rather than at the next poll.
  poke @1 (protocol :UInt32, token :Text) -> ();
  # How long ago this node last heard from the store (ms; -1: never). A node that cannot renew
  # its lease asks the others: if none heard from the store since it did, the store is down
  # for everyone and nobody can move its stages; otherwise it is cut off and stops them.
  storeContact @2 (protocol :UInt32, token :Text, from :Text) -> (node :Text, agoMs :Int64, steadyMs :Int64);
  # Nothing but the token: until a call on a connection has carried it, the node takes only
  # a few KiB on it, so a caller about to send more (a check with a pipeline file) says hello.
  # from: the calling node's name, for the log.
  hello @3 (protocol :UInt32, token :Text, from :Text) -> (node :Text);
  # agoMs: since it last heard from the store (-1: never); steadyMs: how long the store has
  # answered it without a failure (just back after an outage: short).
}

enum MemberStatus {
  self @0;
  up @1;       # its lease is alive in the store
  down @2;     # it registered once; its lease has ended
}

struct MemberState {
  info @0 :NodeInfo;
  status @1 :MemberStatus;
}

enum PipelineStatus {
  running @0;
  stopping @1;   # draining on every node running part of it
  finished @2;
}

struct PipelineState {
  name @0 :Text;
  status @1 :PipelineStatus;
  epoch @2 :Int64;           # the placement's revision in the store
  leader @3 :Text;           # the node that places its stages again when a node is lost
  waiting @4 :List(Text);    # stages placed on no live node, and why
  placement @5 :List(StagePlacement);
}

enum ExecMode {
  embedded @0;
  isolated @1;
}

# An instance's state (actors/troupe/lifecycle.hpp: instance_status), in the same order.
enum InstanceStatus {
  loaded @0;
  started @1;
  running @2;
  stopping @3;
  stopped @4;
  failed @5;
  quarantined @6;
  finished @7;             # running, its input ended
  paused @8;               # running, held by `troupe pause`
}

enum FailureClass {
  none @0;
  startFailed @1;
  lost @2;
  teardownFailed @3;
}

struct InstanceState {
  pipeline @0 :Text;
  stage @1 :Text;
  instance @2 :Text;        # "stage" or "stage#N" for further replicas
  node @3 :Text;
  mode @4 :ExecMode;
  state @5 :InstanceStatus;
  generation @6 :UInt64;
  framesIn @7 :UInt64;
  framesOut @8 :UInt64;
  restarts @9 :UInt64;
  failure @10 :FailureClass;  # the last failure's class
  lastError @11 :Text;
  errors @12 :UInt64;       # inputs whose processing failed
  deadLetters @13 :UInt64;
  p50Ms @14 :Float64;       # processing time per input
  p99Ms @15 :Float64;
}

struct Event {
  seq @0 :UInt64;          # per node, from 1, without gaps
  timeMs @1 :Int64;        # wall clock, milliseconds since the epoch
  kind @2 :Text;           # pipeline, instance, restart, quarantine, dead_letter, scale, reload
  node @3 :Text;
  pipeline @4 :Text;
  stage @5 :Text;          # empty: the pipeline's own
  replica @6 :Int64;       # -1: not about one instance
  generation @7 :UInt64;
  state @8 :Text;
  failure @9 :Text;        # start_failed, lost, teardown_failed
  detail @10 :Text;
}

struct EventCursor {
  node @0 :Text;
  seq @1 :UInt64;          # the last event of that node the caller has
}

interface Admin {
  # The members and pipelines as the store shows them, and the instances of every member that
  # is up (asked with thisNodeOnly), or of this node alone.
  status @0 (protocol :UInt32, token :Text, thisNodeOnly :Bool)
      -> (node :Text, members :List(MemberState), instances :List(InstanceState),
          pipelines :List(PipelineState));
  # A pipeline file's text, placed on the cluster: checked on every node it places stages on,
  # then written to the store, where each node finds its part. Refused while a pipeline of
  # that name runs.
  deploy @1 (protocol :UInt32, token :Text, pipeline :Text, source :Text) -> (name :Text, epoch :Int64);
  # Scales a stage wherever it runs: the node asked passes the call on to the stage's node.
  # on: the node the caller expects it on (empty: wherever); another is refused, naming it.
  scale @2 (protocol :UInt32, token :Text, pipeline :Text, stage :Text, replicas :UInt32, on :Text)
      -> (node :Text);
  # Drains and stops a pipeline on every node running part of it (the store says so; a node
  # that comes back later does not start its part).
  stop @3 (protocol :UInt32, token :Text, pipeline :Text) -> (nodes :List(Text));
  # Nothing but the token, as Peer.hello: a client says it before a call that may be large.
  hello @4 (protocol :UInt32, token :Text) -> (node :Text);
  # The events each node keeps (its latest 4096), newer than the caller's cursor for that node,
  # of one pipeline (empty: all), oldest first, at most 1000 per node a call (more: true when
  # some node has more): this node's (thisNodeOnly), or every member's that is up.
  events @5 (protocol :UInt32, token :Text, pipeline :Text, after :List(EventCursor), thisNodeOnly :Bool)
      -> (events :List(Event), more :Bool);
}
