@0xe01391527e57f6a7;
# Between nodes of a cluster, and between the CLI and a node (admin).
#
# Every call carries the cluster's protocol version and token: a peer or an admin client
# that presents another is refused with an exception that says which, and the refusing
# node logs it too.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("troupe::wire");

const clusterProtocol :UInt32 = 2;

struct NodeInfo {
  name @0 :Text;
  peerAddress @1 :Text;     # where peers reach it (host:port)
  adminAddress @2 :Text;
  metricsAddress @3 :Text;  # empty: no /metrics
  incarnation @4 :UInt64;   # changes on every start of the node
  dataAddress @5 :Text;     # where peers send frames (schema/link.capnp)
}

struct StagePlacement {
  stage @0 :Text;
  nodes @1 :List(Text);       # the nodes running it (each runs `replicas` of it)
  candidates @2 :List(Text);  # the nodes the file allows, in order ("*": any; none: as deployed)
  moves @3 :UInt32;           # how often it was placed again: its instances start past that generation
}

struct StagePart {
  # A stage a node runs, as that node found it: for checking dependencies across nodes.
  stage @0 :Text;
  plugin @1 :Text;
  version @2 :Text;
  needs @3 :List(Need);
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
  # Membership: each node calls each member it knows every heartbeat interval. The caller
  # says who it is and whom it knows; the answer, likewise. A peer not heard from within
  # the configured bound is marked down.
  heartbeat @0 (protocol :UInt32, token :Text, from :NodeInfo, members :List(NodeInfo))
      -> (node :NodeInfo, members :List(NodeInfo));
  # Runs this node's part of a pipeline placed across nodes (the node that was asked to
  # deploy it asks every node it places stages on): first with checkOnly, on every node,
  # then for real. The placement names every stage's node, and nodes their data address.
  host @1 (protocol :UInt32, token :Text, pipeline :Text, source :Text,
           placement :List(StagePlacement), nodes :List(NodeAddress), checkOnly :Bool,
           run :Text) -> (parts :List(StagePart));
  # run names this deployment on the data links; parts: the stages the node runs, as it found
  # them (with checkOnly), so that the node deploying checks dependencies across nodes.
}

struct MemberState {
  info @0 :NodeInfo;
  state @1 :Text;           # "self", "up", "down" or "joining" (known, never heard from)
  lastHeardMs @2 :Int64;    # since the last heartbeat from it; -1: never
  rttMs @3 :Float64;        # of the last heartbeat this node sent it; -1: none yet
}

struct InstanceState {
  pipeline @0 :Text;
  stage @1 :Text;
  instance @2 :Text;        # "stage" or "stage#N" for further replicas
  node @3 :Text;
  mode @4 :Text;            # embedded or isolated
  state @5 :Text;
  generation @6 :UInt64;
  framesIn @7 :UInt64;
  framesOut @8 :UInt64;
  restarts @9 :UInt64;
}

interface Admin {
  # The members as this node sees them, and the instances of every member that is up
  # (asked with thisNodeOnly), or of this node alone.
  status @0 (protocol :UInt32, token :Text, thisNodeOnly :Bool)
      -> (node :Text, members :List(MemberState), instances :List(InstanceState));
  # A pipeline file's text, run on this node; its name must not be running here already.
  deploy @1 (protocol :UInt32, token :Text, pipeline :Text, source :Text) -> (name :Text);
  # Scales a stage wherever it runs: the node asked passes the call on to the stage's node.
  # on: the node the caller expects it on (empty: wherever); another is refused, naming it.
  scale @2 (protocol :UInt32, token :Text, pipeline :Text, stage :Text, replicas :UInt32, on :Text)
      -> (node :Text);
  # Drains and stops a pipeline (every node running part of it). A node that runs none of it
  # asks the members that are up (thisNodeOnly), and answers with the node that took it.
  stop @3 (protocol :UInt32, token :Text, pipeline :Text, thisNodeOnly :Bool) -> (node :Text);
}
