# qsync consumer image: `docker build -t qsync .`, then
#   docker run --rm -e QSYNC_MASTER=redis://... -e QSYNC_REPLICA=redis://... qsync
# Every flag of `qsync consume` has an environment variable (see README.md).

FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the package's own `prepare` (the build) needs the sources,
# which are copied next; the dependencies need no install step of their own.
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json index.ts ./
COPY scripts ./scripts
COPY shared ./shared
COPY producer ./producer
COPY consumer ./consumer
RUN npm run build

FROM node:20-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# ioredis is a peer dependency of qsync; the lock installs it in production
# too (bullmq's optional peer on it), and the build stops here if it did not.
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force && node -e "require.resolve('ioredis')"
COPY --from=build /app/dist ./dist
COPY bin ./bin
USER node
# Exec form: node is PID 1 and gets SIGTERM itself, so `docker stop` lets the
# consumer finish its batches in flight and release its lease.
CMD ["node", "bin/qsync.js", "consume"]
