# The aienv image for users and release CI: the operator binary (all subcommands), the
# PostgreSQL 17 client tools the backup commands run, CA certificates; non-root, and fine with a
# read-only root filesystem (it writes only under the volumes its pods mount).
#
# The Debian packages come from tools/images/packages/aienv.txt, the one list the test images
# (tools/images/build.sh, debootstrap) read too; tests/tests/image_recipes.rs checks that both
# recipes agree on the list, the Debian release, the user and the entrypoint.
FROM rust:1.95-trixie AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p aienv --bin aienv

FROM debian:trixie-slim
COPY tools/images/packages/aienv.txt /tmp/packages.txt
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      $(grep -Ev '^\s*(#|$)' /tmp/packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/packages.txt \
 && echo "aienv:x:65532:65532:aienv:/home/aienv:/usr/sbin/nologin" >> /etc/passwd \
 && echo "aienv:x:65532:" >> /etc/group \
 && mkdir -p /home/aienv && chown 65532:65532 /home/aienv
COPY --from=build /src/target/release/aienv /usr/local/bin/aienv
USER 65532:65532
ENV HOME=/home/aienv
WORKDIR /home/aienv
ENTRYPOINT ["/usr/local/bin/aienv"]
