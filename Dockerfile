# The dapifs image: the node agent of examples/kubernetes/ (`dapifs csi`), the keeper
# (/app/dist/dapifs-keeper), and every other dapifs command. docs/running-in-a-cluster.md has how
# to build it, push it and set it in the manifests:
#   docker build -t REGISTRY/dapifs:0.1.0 . && docker push REGISTRY/dapifs:0.1.0
# The two images it starts from are build arguments. Docker Hub's are the defaults; the project's
# tests build this same file with buildah from two made from Debian's packages (scripts/image.sh).
ARG NODE_IMAGE=node:20-bookworm-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Build: npm ci builds the native layer, fuse-native's addon ported to libfuse 3, from its source
# (lib/native/build.mjs, npm's postinstall) with node-gyp, python3, make and g++, against Node's
# own headers (/usr/local/include/node) and libfuse3-dev's, found with pkg-config. It goes into
# node_modules/fuse-native, where fuse-native loads it from.
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ gcc pkg-config libfuse3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
COPY lib/native/ lib/native/
# The postinstall falls back to fuse-native's prebuilt libfuse 2 addon with a warning; --strict
# fails the image build instead, as scripts/setup.sh does.
RUN npm ci --no-audit --no-fund \
 && node lib/native/build.mjs --strict
COPY tsconfig.json ./
COPY types/ types/
COPY lib/ lib/
COPY scripts/bundle.mjs scripts/
# npm run build also bundles the command line into dist/cli.cjs with esbuild and writes V8's code
# cache for it, dist/cli.cjs.cache, with this stage's node, which is the image's (scripts/bundle.mjs:
# a start reads one file, not 40, and compiles little of it); and it compiles the keeper
# (lib/keeper/keeper.c) into dist/dapifs-keeper. What the image runs is then node_modules without
# the dev dependencies, and without what only a developer reads (TypeScript declarations, source
# maps).
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund \
 && find node_modules \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -type f -delete

# Run: Debian with libfuse3-3 (the library the addon links) and fuse3 (fusermount3, which
# unmounting calls), and Node's one binary (no npm, no headers, no compilers). The agent runs as
# root in a privileged container (examples/kubernetes/daemonset.yaml); the keeper, from the same
# image, unprivileged (examples/kubernetes/keeper.yaml).
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libfuse3-3 fuse3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules/ node_modules/
COPY --from=build /app/dist/ dist/
ENTRYPOINT ["node", "/app/dist/main.js"]
# The usage (`dapifs csi` has no --help of its own); the DaemonSet gives `csi ...` as args.
CMD ["help"]
