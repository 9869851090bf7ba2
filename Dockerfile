# The dapifs image: the CSI node driver of examples/kubernetes/ (and every other dapifs command).
#   docker build -t REGISTRY/dapifs:0.1.0 . && docker push REGISTRY/dapifs:0.1.0
# then set that image in examples/kubernetes/daemonset.yaml (or install.yaml).

# Build: npm ci builds the native layer, fuse-native's addon ported to libfuse 3, from its source
# (lib/native/build.mjs, npm's postinstall) with node-gyp, python3, make and g++, against Node's
# own headers (/usr/local/include/node) and libfuse3-dev's, found with pkg-config. It goes into
# node_modules/fuse-native, where fuse-native loads it from.
FROM node:20-bookworm-slim AS build
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
# npm run build also compiles the keeper (lib/keeper/keeper.c) into dist/dapifs-keeper.
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# Run: libfuse3-3 (the library the addon links) and fuse3 (fusermount). The driver runs as root
# in a privileged container (examples/kubernetes/daemonset.yaml); the keeper, from the same image,
# unprivileged (examples/kubernetes/keeper.yaml: /app/dist/dapifs-keeper).
FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libfuse3-3 fuse3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules/ node_modules/
COPY --from=build /app/dist/ dist/
ENTRYPOINT ["node", "/app/dist/main.js"]
# The usage (`dapifs csi` has no --help of its own); the DaemonSet gives `csi ...` as args.
CMD ["help"]
